# Arca's default attestation policy: evidence claims -> EAR trust vector (AR4SI values).
#
# input: {"tee", "claims": {verified claims}, "init_data": {parsed init-data TOML or null}}
# data:  {"reference": {"<tee>.<claim>": [accepted values]}, "config": {"allow_sim", "allow_sample"}}
#
# hardware:    2 (affirming) for a real TEE, not in debug mode, TCB up to date;
#              32 (warning) when the TCB is not up to date; 97 (contraindicated) otherwise.
#              sim/vm/sample count as real only when the KBS configuration allows them.
#              Hardware evidence is up to date only with tcb_status "UpToDate", which a
#              verifier reports only after checking current collateral (revocation, QE and
#              TDX module identity, TCB level; SNP: CRL and minimum TCB): no status, no trust.
# executables: 2 when reference values exist for this TEE and every "<tee>.<claim>" list
#              contains the claim's value; 33 (unrecognized) otherwise. No reference values
#              means no affirmation: deny by default.
package policy

import rego.v1

hardware_tee if input.tee in {"tdx", "snp", "sgx"}

tee_allowed if hardware_tee

tee_allowed if {
	input.tee == "sim"
	data.config.allow_sim == true
}

# vm: a plain VM whose security processor the sim platform plays (same root, same trust).
tee_allowed if {
	input.tee == "vm"
	data.config.allow_sim == true
}

tee_allowed if {
	input.tee == "sample"
	data.config.allow_sample == true
}

tcb_ok if {
	not hardware_tee
	input.claims.tcb_status == null
}

tcb_ok if input.claims.tcb_status == "UpToDate"

default hardware := 97

hardware := 2 if {
	tee_allowed
	input.claims.debug == false
	tcb_ok
}

hardware := 32 if {
	tee_allowed
	input.claims.debug == false
	not tcb_ok
}

prefix := concat("", [input.tee, "."])

reference_claims contains k if {
	some name, _ in data.reference
	startswith(name, prefix)
	k := substring(name, count(prefix), -1)
}

mismatched contains k if {
	some k in reference_claims
	not input.claims[k] in data.reference[concat("", [prefix, k])]
}

default executables := 33

executables := 2 if {
	count(reference_claims) > 0
	count(mismatched) == 0
}
