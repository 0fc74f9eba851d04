"""What a ``PolicyDeny`` answer says about *why* (issue 15): the refused TD's own measurement
(a prefix) and the claims that kept its attestation from affirming.

The detail goes to the TD that asked, and through its agent to whoever runs the container, so
it names only what that TD already knows about itself (its verified claims and the trust
vector of its own token) plus the *names* of the reference-value claims its values are not
among. It never names an accepted value, a resource's content or the text of a policy.
"""

from __future__ import annotations

from typing import Any

#: Hex digits of a measurement shown: enough to tell two builds apart at a glance, as a short
#: image id is.
PREFIX_HEX = 16
#: Claims that hold a TEE's launch measurement, in the order they are looked for when no
#: reference-value claim was missed (each verifier names its own; see arca.verifier).
MEASUREMENT_CLAIMS = ("measurement", "mrtd", "mrenclave")
#: AR4SI values a trust claim may carry, as words (draft-ietf-rats-ar4si, section 3.3).
_TIERS = ((96, "contraindicated"), (32, "warning"), (2, "affirming"), (0, "none"))


def _short(value: Any) -> str:
    text = str(value)
    return text[:PREFIX_HEX] + "…" if len(text) > PREFIX_HEX else text


def _tier(value: int) -> str:
    return next(word for floor, word in _TIERS if abs(value) >= floor)


def denial_detail(path: str, claims: dict[str, Any], reference: dict[str, list[str]]) -> str:
    """``resource policy denies PATH: ...`` for a token whose claims are ``claims`` (verified
    EAR claims), judged against the reference values ``reference``: the ``release:<path>``
    grants ``arca policy generate`` writes (``"<tee>/<value>/..."``), else the default
    attestation policy's ``"<tee>.<claim>" -> [values]``."""
    sub = claims.get("submods", {}).get("cpu0", {}) if isinstance(claims, dict) else {}
    evidence = sub.get("ear.veraison.annotated-evidence") or {}
    vector = sub.get("ear.trustworthiness-vector") or {}
    tee = str(evidence.get("tee", "?"))
    parts = [f"ear.status {sub.get('ear.status', '?')}"]
    weak = [f"{name} {value} ({_tier(value)})" for name, value in vector.items()
            if isinstance(value, int) and abs(value) >= 32]
    if weak:
        parts.append("trust vector: " + ", ".join(weak))
    named: set[str] = set()
    grant = "release:" + path.replace("/", ":")
    if grant in reference:
        mine = [g.split("/")[1:] for g in reference[grant] if g.split("/")[0] == tee]
        known = {v for g in mine for v in g}
        # the TD's own hex claims (measurements, init-data hash) that no grant names
        missed = [k for k, v in evidence.items() if isinstance(v, str) and len(v) >= 32
                  and k != "report_data" and _is_hex(v) and v not in known]
        if not mine:
            parts.append(f"{grant} grants no {tee} TD")
        elif missed:
            named.update(missed)
            parts.append(f"no {grant} grant for this {tee} TD's " + ", ".join(
                f"{k} {_short(evidence[k])}" for k in missed))
        else:
            parts.append(f"no {grant} grant matches this {tee} TD's claims together")
    prefix = f"{tee}."
    missed = sorted(k for k in reference if k.startswith(prefix)
                    and evidence.get(k[len(prefix):]) not in reference[k])
    if missed:
        named.update(k[len(prefix):] for k in missed)
        parts.append("not among the reference values: " + ", ".join(
            f"{k} {_short(evidence.get(k[len(prefix):]))}" for k in missed))
    claim = next((c for c in MEASUREMENT_CLAIMS if c in evidence), None)
    if claim is not None and claim not in named:
        parts.append(f"{tee}.{claim} {_short(evidence[claim])}")
    return f"resource policy denies {path}: " + "; ".join(parts)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
