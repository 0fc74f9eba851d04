"""``arca verify``: verify one piece of TEE evidence and print its claims.

Exit status: 0 valid and accepted, 1 invalid or rejected (the failed check is printed),
2 usage error or unreadable input. Argument handling only; the work is
:func:`arca.verifier.registry.verify_evidence` and, for TDX evidence in Trustee's form with
event logs, the KBS's own replay (:func:`arca.kbs.evidence_formats.event_log_claims`): a log
that does not replay to the verified quote's RTMRs rejects the evidence (exit 1).
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from typing import Any

import typer

from arca.errors import ArcaError, CollateralError, ConfigError, EvidenceError
from arca.verifier.base import Expected, VerifierOptions
from arca.verifier.registry import FACTORIES

#: ``auto`` (detected from the evidence) or a TEE the verifier registry has.
TEES = ("auto", *FACTORIES)
#: Evidence larger than this is not evidence (a DCAP quote with its chain is ~5-8 KiB).
MAX_EVIDENCE_BYTES = 1024 * 1024


def _hex(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    text = value.removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise typer.BadParameter(f"{name} must be hex, got {value!r}") from None


def _instant(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"--at must be ISO-8601, got {value!r}") from None
    # An instant without a zone is read as UTC, the zone of all attestation collateral.
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


#: Keys of ``/run/arca/evidence.json`` as the agent writes it
#: (``arca.guest.evidence.evidence_document``).
EVIDENCE_DOCUMENT_KEYS = frozenset({"tee", "report_data", "evidence", "runtime_data"})


def evidence_document(data: bytes) -> dict[str, Any] | None:
    """The agent's evidence document, if ``data`` is one (else ``None``: raw evidence)."""
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not {"tee", "evidence"} <= set(doc) \
            or not set(doc) <= EVIDENCE_DOCUMENT_KEYS:
        return None
    return doc


def _unpack(doc: dict[str, Any], tee: str) -> tuple[bytes, str, bytes | None]:
    """(raw evidence, tee, report data the document says the evidence carries)."""
    import base64
    import binascii

    if not isinstance(doc["tee"], str) or tee not in ("auto", doc["tee"]):
        raise ConfigError(f"evidence document is for tee {str(doc['tee'])[:16]!r}, not {tee}")
    try:
        raw = base64.b64decode(doc["evidence"], validate=True)
        said = bytes.fromhex(doc["report_data"]) if "report_data" in doc else None
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError("evidence document: evidence must be base64 and report_data hex"
                          ) from None
    return raw, doc["tee"], said


def _coco_evidence(data: bytes, tee: str) -> tuple[bytes, str, dict[str, Any] | None]:
    """CoCo attesters' JSON evidence (``{"attestation_report", "cert_chain"}`` for SNP,
    ``{"quote", "cc_eventlog"?, "aa_eventlog"?}`` for TDX/SGX) as the raw bytes the verifiers
    take, and the TDX document whose event logs are replayed once the quote verified."""
    if not data.lstrip().startswith(b"{"):
        return data, tee, None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return data, tee, None
    if not isinstance(doc, dict):
        return data, tee, None
    from arca.kbs import evidence_formats as formats

    try:
        if "attestation_report" in doc and tee in ("auto", "snp"):
            return formats.snp_evidence_bytes(doc), "snp", None
        if "quote" in doc and set(doc) <= {"quote", *formats.TDX_LOGS} and tee != "sim":
            kind = "tdx" if tee == "auto" else tee
            return formats.quote_bytes(kind, doc, 4 * MAX_EVIDENCE_BYTES // 3 + 4), tee, \
                doc if kind == "tdx" else None
    except EvidenceError as e:
        raise ConfigError(f"CoCo evidence document: {e}") from None
    return data, tee, None


def _replay_event_logs(doc: dict[str, Any], result: dict[str, Any]) -> None:
    """Replay ``doc``'s event logs to the verified quote's RTMRs, as the KBS does (one code
    path), into ``result["event_log"]``; a log that does not replay rejects the evidence."""
    from arca.kbs import evidence_formats as formats

    try:
        replayed = formats.event_log_claims("tdx", doc, result["claims"])
    except EvidenceError as e:
        result["event_log"] = {"replayed": False, "error": e.describe()}
        result["error"] = result["error"] or f"event log: {e.describe()}"
        return
    result["event_log"] = None if replayed is None else {"replayed": True, **replayed}


def _event_log_lines(log: dict[str, Any] | None) -> list[str]:
    if log is None:
        return ["event log: none sent (the RTMRs are not explained by events)"]
    if not log["replayed"]:
        return [f"event log: does not replay ({log['error']})"]
    lines = [f"event log: replays to the quote's RTMRs ({log['events']} events)"]
    if "kernel" in log:
        lines.append(f"  kernel: {log['kernel']}")
    for e in log.get("aael", ()):
        content = e["content"] if isinstance(e["content"], str) else json.dumps(e["content"])
        lines.append(f"  runtime event (RTMR{e['rtmr']}): {e['domain']} {e['operation']} "
                     f"{content}")
    return lines


def _human(value: Any) -> str:
    if value is None:
        return "not reported"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value) if value else "none"
    return str(value)


def _emit(as_json: bool, result: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    if result["valid"]:
        print(f"valid: {result['tee']} evidence")
        if result["error"]:
            print(f"rejected: {result['error']}")
        for key, value in sorted(result["claims"].items()):
            print(f"  {key}: {_human(value)}")
        if "event_log" in result:
            print("\n".join(_event_log_lines(result["event_log"])))
        for note in result.get("notes", ()):
            print(f"note: {note}")
    else:
        print(f"invalid: {result['error']}")


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        evidence: pathlib.Path = typer.Argument(
            ..., help="Evidence file: a quote, a report, sim evidence, or the agent's "
            "/run/arca/evidence.json."),
        tee: str = typer.Option("auto", "--tee", help="auto, sgx, tdx, snp or sim."),
        collateral: pathlib.Path | None = typer.Option(
            None, "--collateral", help="Directory of certificates/collateral (for SNP: "
            "vcek.pem or vlek.pem, ask.pem or asvk.pem, ark.pem)."),
        at: str | None = typer.Option(None, "--at", help="Evaluation instant (ISO-8601)."),
        report_data: str | None = typer.Option(
            None, "--report-data",
            help="Expected report data (hex). SGX/TDX/SNP: a shorter value must be followed "
            "by zero bytes in the evidence."),
        init_data_hash: str | None = typer.Option(
            None, "--init-data-hash",
            help="Expected init-data hash (hex): MRCONFIGID, HOST_DATA or the sim field."),
        sim_root: pathlib.Path | None = typer.Option(
            None, "--sim-root", help="PEM of the trusted Arca sim root (sim evidence only)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Verify TEE evidence against vendor roots; exit 0 valid, 1 invalid, 2 usage."""
        if tee not in TEES:
            raise typer.BadParameter(f"--tee must be one of {', '.join(TEES)}, got {tee!r}")
        expected = Expected(report_data=_hex(report_data, "--report-data"),
                            init_data_hash=_hex(init_data_hash, "--init-data-hash"))
        instant = _instant(at)
        try:
            if evidence.stat().st_size > MAX_EVIDENCE_BYTES:
                raise OSError(f"larger than {MAX_EVIDENCE_BYTES} bytes")
            data = evidence.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read evidence {evidence}: {e}") from None
        notes: list[str] = []
        data, tee, coco_tdx = _coco_evidence(data, tee)
        doc = evidence_document(data)
        if doc is not None:
            data, tee, said = _unpack(doc, tee)
            if expected.report_data is None and said is not None:
                # Checks the document against its own evidence; binding to a value of the
                # caller's own needs --report-data.
                expected = Expected(report_data=said, init_data_hash=expected.init_data_hash)
                notes.append("report data checked against the value the evidence document "
                             "states (pass --report-data to require your own)")
        extra: dict[str, Any] = {}
        if sim_root is not None:
            extra["sim_root"] = str(sim_root)
        options = VerifierOptions(
            collateral_dir=str(collateral) if collateral is not None else None, extra=extra)

        from arca.verifier.registry import detect_tee, verify_evidence

        result: dict[str, Any] = {"valid": False, "tee": None if tee == "auto" else tee,
                                  "claims": {}, "tcb_status": None, "error": None}
        try:
            if tee == "auto":
                result["tee"] = tee = detect_tee(data)
            claims = verify_evidence(data, tee=tee, options=options, expected=expected,
                                     at=instant)
        except EvidenceError as e:
            result["error"] = e.describe()
            # "valid" means authentic: every signature and chain link verified to the vendor
            # root. A quote rejected afterwards (TCB not supported or revoked, stale
            # collateral) is still reported as authentic, with its claims and the reason.
            if e.fields.get("authentic"):
                result.update(valid=True, claims=e.fields.get("claims") or {},
                              tcb_status=e.fields.get("tcb_status"))
        except CollateralError as e:
            result["error"] = f"collateral: {e}"
        except ValueError as e:  # a caller-side mistake, e.g. an over-long expected value
            raise ConfigError(str(e)) from None
        except ConfigError:
            raise
        except ArcaError as e:
            result["error"] = f"{type(e).__name__}: {e}"
        else:
            claims_dict = claims.to_dict()
            result.update(valid=True, claims=claims_dict, tcb_status=claims.tcb_status)
        if coco_tdx is not None and result["valid"] and result["tee"] == "tdx":
            _replay_event_logs(coco_tdx, result)
        if notes and not as_json:
            result["notes"] = notes
        _emit(as_json, result)
        if not result["valid"] or result["error"]:
            raise typer.Exit(1)
