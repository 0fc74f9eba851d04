# Arca's default resource policy: release a resource only to an affirming attestation.
#
# input: the EAR token claims plus "resource-path" ("repo/type/tag");
# data:  {"reference": {...}} (the reference values store).
package policy

import rego.v1

default allow := false

allow if input.submods.cpu0["ear.status"] == "affirming"
