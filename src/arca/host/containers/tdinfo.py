"""What ``arca ps`` and ``arca inspect`` show about a container's TD (issue 15): its backend,
the measurement its launch registered, the broker (KBS) its init-data names, and the
attestation verdict *as reported by the TD*.

Sources, and how far each is trusted:

- backend, broker: what this host supplied (``--tee``; ``kbs_url`` of the init-data it passed,
  which the TD measures). Recorded in ``td.json`` when the container is prepared.
- measurement: what the runtime registered with the platform at create (the runtime's state),
  copied into ``td.json`` once the TD started, so it outlives the runtime's state.
- verdict: only the TD and the broker know it; the host cannot trust what the TD says and only
  displays it, labelled. The agent fetches every secret *before* it execs the workload, and on
  a refusal it prints one ``arca-agent: error: ...`` line and exits 126 (125 for other
  failures) without running the workload. So a TD with a broker that started its workload was
  allowed; one that exited 125/126 with the agent's line last in its log was refused (the line,
  with the broker's reason, is the detail). A workload can print such a line itself: which is
  why this is the TD's report, never a host check. Without a log (``-t``) it is ``unknown``.

``ps`` reads these for every container: only ``os`` and the lean JSON here.
"""

from __future__ import annotations

import os

from arca._internal.fastjson import json_dumps, json_loads

TD_FILE = "td.json"
#: The agent's one error line (arca.guest.agent.main) and the words it uses per cause.
AGENT_ERROR = "arca-agent: error: "
AGENT_EXIT_CODES = (125, 126)
#: Bytes read from the end of a log to find the agent's line.
LOG_TAIL = 8192


def record(container_dir: str, tee: str, init_data: bytes | None) -> None:
    """At prepare: the backend and the broker the init-data names (None: no broker)."""
    if tee == "none":
        return
    broker = None
    if init_data is not None:
        try:
            from arca.wire.initdata import InitData

            broker = InitData.parse(init_data).kbs_url
        except Exception:  # noqa: BLE001 - the runtime refuses bad init-data with the reason
            broker = None
    _write(container_dir, {"backend": tee, "broker": broker, "measurement": ""})


def add_measurement(container_dir: str, cid: str, run_dir: str) -> None:
    """Once started: copy the measurement from the runtime's state (it goes with the TD)."""
    info = load(container_dir)
    if info is None:
        return
    try:
        with open(os.path.join(run_dir, "containers", cid, "state.json"), "rb") as f:
            state = json_loads(f.read())
        measurement = str(state.get("measurement") or "")
    except (OSError, ValueError, AttributeError):
        return
    if measurement:
        _write(container_dir, {**info, "measurement": measurement})


def load(container_dir: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(container_dir, TD_FILE), "rb") as f:
            obj = json_loads(f.read())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _write(container_dir: str, obj: dict[str, object]) -> None:
    tmp = os.path.join(container_dir, TD_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(json_dumps(obj))
    os.rename(tmp, os.path.join(container_dir, TD_FILE))


def agent_error(log_path: str) -> str | None:
    """The agent's error line if it is the last line of the log, else None."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [ln for ln in tail.replace("\r", "").split("\n") if ln.strip()]
    if lines and lines[-1].startswith(AGENT_ERROR):
        return lines[-1][len(AGENT_ERROR):]
    return None


def verdict(status: str, exit_code: int | None, broker: object, log_path: str
            ) -> tuple[str, str]:
    """(verdict, detail) as the TD reports it; see the module docstring."""
    if not broker:
        return "no broker", ""
    if status == "created":
        return "pending", ""
    if status not in ("running", "exited"):
        return "not started", ""
    if status == "exited" and exit_code in AGENT_EXIT_CODES:
        line = agent_error(log_path)
        if line is None:
            return "unknown", ""
        if line.startswith("KBS ") and " refused " in line:
            return "refused", line
        if line.startswith("KBS ") and " unavailable " in line:
            return "unreachable", line
        return "failed", line
    return "allowed", ""


def describe(container_dir: str, status: str, exit_code: int | None, log_path: str
             ) -> dict[str, object] | None:
    """The TD as ``inspect`` shows it (None for a container without a TD)."""
    info = load(container_dir)
    if info is None:
        return None
    word, detail = verdict(status, exit_code, info.get("broker"), log_path)
    return {"backend": info.get("backend"), "measurement": info.get("measurement") or "",
            "broker": info.get("broker"),
            "attestation": {"verdict": word, "detail": detail, "reported_by": "td"}}
