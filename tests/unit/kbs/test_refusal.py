"""The detail of a PolicyDeny (issue 15): the refused TD's own measurement and what kept it
out, never an accepted value."""

from __future__ import annotations

from arca.kbs.refusal import denial_detail

MINE = "ab" * 48
ACCEPTED = "cd" * 48
INIT = "ef" * 48


def claims(status: str = "warning", executables: int = 33, hardware: int = 2) -> dict:  # type: ignore[type-arg]
    return {"submods": {"cpu0": {
        "ear.status": status,
        "ear.trustworthiness-vector": {"hardware": hardware, "executables": executables,
                                       "configuration": 0},
        "ear.veraison.annotated-evidence": {"tee": "sim", "measurement": MINE,
                                            "init_data": INIT, "report_data": "00" * 64,
                                            "debug": False}}}}


def test_grant_that_names_another_measurement() -> None:
    text = denial_detail("default/app/key", claims(),
                         {"release:default:app:key": [f"sim/{ACCEPTED}/{INIT}"]})
    assert text == ("resource policy denies default/app/key: ear.status warning; trust vector: "
                    "executables 33 (warning); no release:default:app:key grant for this sim "
                    f"TD's measurement {MINE[:16]}…")
    assert ACCEPTED[:8] not in text and INIT[:8] not in text


def test_default_policy_reference_values_and_no_grant_for_the_tee() -> None:
    text = denial_detail("a/b/c", claims("contraindicated", hardware=97),
                         {"sim.measurement": [ACCEPTED], "release:a:b:c": [f"tdx/{ACCEPTED}"]})
    assert "trust vector: hardware 97 (contraindicated), executables 33 (warning)" in text
    assert "release:a:b:c grants no sim TD" in text
    assert f"not among the reference values: sim.measurement {MINE[:16]}…" in text
    assert text.count(MINE[:16]) == 1 and ACCEPTED[:8] not in text


def test_every_value_granted_but_not_together_and_odd_claims() -> None:
    text = denial_detail("a/b/c", claims(), {"release:a:b:c": [f"sim/{MINE}/{ACCEPTED}",
                                                             f"sim/{ACCEPTED}/{INIT}"]})
    assert "no release:a:b:c grant matches this sim TD's claims together" in text
    assert f"sim.measurement {MINE[:16]}…" in text
    assert denial_detail("x/y/z", {}, {}) == "resource policy denies x/y/z: ear.status ?"
