"""Tables and ``--format`` templates for ``arca ps`` / ``arca inspect``, as podman prints them.

Columns are as wide as their longest cell (long names are never cut). ``--format`` takes
podman's Go-template subset that scripts use: ``{{.Field}}`` (dotted paths into the object,
podman's field names for ``ps``), ``{{json .Field}}``, ``{{json .}}``, a leading ``table``
(adds a header row) and ``\\t``. Free of ``re``, ``datetime`` and ``json`` at import: ``arca
ps`` is typed often.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from arca.host.containers.state import ContainerRecord


def epoch(iso: str) -> float | None:
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SS[.fff]+00:00`` (what records hold)."""
    try:
        y, mo, d = int(iso[0:4]), int(iso[5:7]), int(iso[8:10])
        h, mi, s = int(iso[11:13]), int(iso[14:16]), float(iso[17:19])
    except ValueError:
        return None
    # days from 1970-01-01 (Howard Hinnant's days_from_civil)
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + h * 3600 + mi * 60 + s


def ago(iso: str | None, now: float | None = None) -> str:
    """``5 seconds ago`` / ``3 minutes ago`` / ..., as podman words it."""
    t = epoch(iso) if iso else None
    if t is None:
        return ""
    secs = max(0, int((time.time() if now is None else now) - t))
    for size, unit in ((86400 * 7, "week"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a second ago" if secs < 1 else f"{secs} second{'s' if secs > 1 else ''} ago"


def status(r: ContainerRecord) -> str:
    """STATUS in podman's words (``Up 3 minutes``, ``Exited (0) 2 seconds ago``, ``Created``:
    scripts match them), with what only Arca knows appended (a lost monitor, restarts)."""
    shown = r.display_status
    up = ago(r.started).removesuffix(" ago")
    from arca._internal.procs import pid_alive

    if shown == "running" and r.monitor_pid > 0 and not pid_alive(r.monitor_pid):
        return f"Up {up} (monitor lost: arca rm)"
    if shown == "running":
        return (f"Up {up}" if up else "Up") + restarts(r)
    if r.status == "exited":
        return f"Exited ({r.exit_code}) {ago(r.finished)}".rstrip() + restarts(r)
    return shown[:1].upper() + shown[1:]


def restarts(r: ContainerRecord) -> str:
    """How often its restart policy ran it again (podman's RestartCount), when it did."""
    n = r.restart_count
    return f", restarted {n} time{'s' if n > 1 else ''}" if n else ""


    return True


def measurement(r: ContainerRecord) -> str:
    """The launch measurement the runtime registered for a TD ("" without a TD or when the
    runtime has no state for it any more)."""
    if r.tee == "none" or r.status not in ("created", "running"):
        return ""
    try:
        from arca.host.runtime.state import load

        st = load(r.id)
    except Exception:  # noqa: BLE001 - a display detail: never fail `ps` over it
        return ""
    return st.measurement if st is not None else ""


def supervisor_gone(r: ContainerRecord) -> bool:
    """:meth:`arca.host.containers.engine.Engine.is_lost` without importing the engine."""
    import os

    from arca._internal.procs import pid_alive

    return (r.status in ("created", "running") and r.monitor_pid > 0
            and r.monitor_pid != os.getpid() and not pid_alive(r.monitor_pid))


def labels(store: Any, cid: str) -> dict[str, str]:
    """A container's ``--label``s (``Engine.labels`` without importing the engine)."""
    import os

    from arca._internal.fastjson import json_loads

    try:
        with open(os.path.join(store.dir(cid), "labels.json"), "rb") as f:
            obj = json_loads(f.read())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in obj.items()} if isinstance(obj, dict) else {}


def ps_fields(r: ContainerRecord, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A container as ``arca ps --format`` sees it: podman's field names."""
    return {
        **td_fields(r),
        "ID": r.id[:12], "FullID": r.id, "Names": r.name, "Image": r.image,
        "ImageID": r.image_digest, "Command": " ".join(r.args), "CreatedAt": r.created,
        "Created": ago(r.created), "RunningFor": ago(r.created).removesuffix(" ago"),
        "Status": status(r), "State": r.display_status, "Labels": dict(labels or {}),
        "Pid": r.pid, "ExitCode": r.exit_code, "TEE": r.tee,
        "Restarts": r.restart_count, "RestartPolicy": r.restart_policy,
    }


def td_json(r: ContainerRecord) -> dict[str, Any] | None:
    """The ``td`` object of ``arca inspect`` (backend, measurement, broker, verdict) for a
    container's TD; None without one."""
    if r.tee == "none":
        return None
    import os

    from arca.host.containers import tdinfo
    from arca.host.containers.state import root_dir

    d = os.path.join(root_dir(), "containers", r.id)
    td = tdinfo.describe(d, r.status, r.exit_code, os.path.join(d, "container.log"))
    if td is not None and not td["measurement"]:
        td["measurement"] = measurement(r)  # the runtime's live state, before td.json has it
    return td


def ps_record_json(r: ContainerRecord, labels: dict[str, str]) -> dict[str, Any]:
    """``arca ps --json``: Arca's record (as ``inspect`` has it) with the TD's fields."""
    return {**r.to_json(), "state": r.display_status, "labels": labels, "td": td_json(r)}


def ps_podman_json(r: ContainerRecord, labels: dict[str, str]) -> dict[str, Any]:
    """``arca ps --format json``: podman's keys and value types for what Arca has (so ``jq
    '.[].Names[0]'`` works as with podman), plus ``TEE`` and the TD's ``td`` object."""
    def secs(iso: str | None) -> int:
        t = epoch(iso) if iso else None
        return int(t) if t is not None else 0

    return {
        "AutoRemove": r.auto_remove, "Command": list(r.args), "Created": secs(r.created),
        "CreatedAt": ago(r.created), "Exited": r.status == "exited",
        "ExitedAt": secs(r.finished), "ExitCode": r.exit_code or 0, "Id": r.id,
        "Image": r.image, "ImageID": r.image_digest, "Labels": labels or None,
        "Names": [r.name], "Pid": r.pid if r.is_alive() else 0,
        "Restarts": r.restart_count, "StartedAt": secs(r.started),
        # podman's state names (running, paused, exited, created); Status says the rest
        "State": "paused" if r.paused and r.status == "running" else r.status,
        "Status": status(r), "TEE": r.tee, "td": td_json(r),
    }


class Status(dict):  # type: ignore[type-arg]
    """podman's ``State`` object of ``inspect``; on its own in a template (``{{.State}}``)
    it prints the state's name (podman prints the whole struct, which no script reads)."""


def inspect_podman(info: dict[str, Any]) -> dict[str, Any]:
    """``arca inspect``'s object with podman's ``State`` and ``Config`` objects and
    ``ImageName`` added, so that ``-f '{{.State.Status}}'``, ``{{.State.Running}}``,
    ``{{.State.ExitCode}}``, ``{{.State.Pid}}``, ``{{.Config.Image}}``, ``{{.Config.Labels}}``
    and their ``jq`` twins work as with podman."""
    proc = info.get("process") or {}
    user = proc.get("user") or {}
    state = "paused" if info.get("paused") else str(info["status"])  # podman's names
    alive = state in ("running", "paused")
    return {
        **info,
        "State": Status(
            Status=state, Running=state == "running", Paused=state == "paused",
            Dead=state == "error", ExitCode=info.get("exit_code") or 0,
            Pid=info.get("pid") if alive else 0, StartedAt=info.get("started") or "",
            FinishedAt=info.get("finished") or "", Error=info.get("error") or ""),
        "Config": {"Image": info["image"], "Labels": info.get("labels") or {},
                   "Cmd": list(info.get("args") or []), "Env": list(proc.get("env") or []),
                   "WorkingDir": proc.get("cwd", "/"),
                   "User": f"{user.get('uid', 0)}:{user.get('gid', 0)}", "Tty": info["tty"]},
        "ImageName": info["image"],
    }


def ps_table(recs: list[ContainerRecord], no_trunc: bool = False) -> str:
    head = ("CONTAINER ID", "NAME", "TD (MEASUREMENT)", "ATTESTATION (AS THE TD REPORTS)",
            "CREATED", "STATUS", "IMAGE", "COMMAND")
    rows = [head] + [(f["FullID"] if no_trunc else f["ID"], f["Names"],
                      f["TEE"] + ((f" {f['Measurement']}" if no_trunc else
                                   f" {f['Measurement'][:12]}…") if f["Measurement"] else ""),
                      attestation_cell(f), f["Created"], f["Status"], f["Image"],
                      f["Command"] if no_trunc else _cut(f["Command"], 40))
                     for f in (ps_fields(r) for r in recs)]
    return columns(rows)


def ps_filter(filters: list[str], labels_of: Any) -> Any:
    """A predicate for ``ps --filter KEY=VALUE`` (podman's keys ``id``, ``name``, ``status``,
    ``label``, ``ancestor``): values of one key are alternatives, different keys must all
    match; an unknown key or a bad expression is refused, not ignored."""
    from arca.wire.errors import InvalidInput

    by_key: dict[str, list[str]] = {}
    for f in filters:
        key, eq, value = f.partition("=")
        if not eq or key not in ("id", "name", "status", "label", "ancestor"):
            raise InvalidInput(f"--filter {f!r}: expected id=, name=, status=, label= or "
                               "ancestor=")
        by_key.setdefault(key, []).append(value)
    import re

    try:
        names = [re.compile(v) for v in by_key.get("name", [])]
    except re.error as e:
        raise InvalidInput(f"--filter name=: not a regular expression: {e}") from None

    def label_ok(r: ContainerRecord, want: str) -> bool:
        k, eq, v = want.partition("=")
        have = labels_of(r.id)
        return k in have and (not eq or have[k] == v)

    def keep(r: ContainerRecord) -> bool:
        checks: dict[str, Callable[[str], bool]] = {
            "id": lambda v: r.id.startswith(v),
            "status": lambda v: r.display_status == v or r.status == v,
            "label": lambda v: label_ok(r, v),
            "ancestor": lambda v: v in (r.image, r.image_digest) or r.image.endswith("/" + v),
        }
        for key, values in by_key.items():
            if key == "name":
                if not any(p.search(r.name) for p in names):
                    return False
            elif not any(checks[key](v) for v in values):
                return False
        return True

    return keep


def attestation_cell(f: dict[str, Any]) -> str:
    """``allowed by URL`` / ``refused by URL`` / ``no broker``; empty without a TD."""
    if not f["Verdict"]:
        return ""
    return str(f["Verdict"]) + (f" by {f['Broker']}" if f["Broker"] else "")


def td_fields(r: ContainerRecord) -> dict[str, Any]:
    """Measurement, broker and verdict of a container's TD (:mod:`arca.host.containers.tdinfo`);
    the measurement from the runtime's live state when ``td.json`` has none yet."""
    if r.tee == "none":
        return {"Measurement": "", "Broker": None, "Verdict": "", "VerdictDetail": ""}
    import os

    from arca.host.containers import tdinfo
    from arca.host.containers.state import root_dir

    d = os.path.join(root_dir(), "containers", r.id)
    info = tdinfo.load(d) or {}
    word, detail = (tdinfo.verdict(r.status, r.exit_code, info.get("broker"),
                                   os.path.join(d, "container.log")) if info else ("", ""))
    return {"Measurement": str(info.get("measurement") or "") or measurement(r),
            "Broker": info.get("broker"), "Verdict": word, "VerdictDetail": detail}


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, each as wide as its widest cell, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _lookup(obj: Any, path: str) -> Any:
    if path in ("", "."):
        return obj
    for part in path.strip(".").split("."):
        if isinstance(obj, dict):
            if part in obj:
                obj = obj[part]
                continue
            # podman's capitalized names on Arca's own keys (Id -> id, State -> state)
            low = {k.lower().replace("_", ""): k for k in obj}
            key = low.get(part.lower())
            if key is None:
                from arca.wire.errors import InvalidInput

                raise InvalidInput(f"--format: no field {part!r} (fields: "
                                   f"{', '.join(sorted(obj))})")
            obj = obj[key]
        else:
            from arca.wire.errors import InvalidInput

            raise InvalidInput(f"--format: {path!r}: {part!r} is not a field of a value")
    return obj


def _text(value: Any) -> str:
    if isinstance(value, _Names):
        return value.name
    if isinstance(value, Status):
        return str(value["Status"])
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in value.items()) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)


def render(template: str, obj: Any) -> str:
    """One object through a template: ``{{.A.B}}``, ``{{json .A}}``, ``{{json .}}``."""
    out = []
    i = 0
    while True:
        j = template.find("{{", i)
        if j < 0:
            out.append(template[i:])
            break
        k = template.find("}}", j)
        if k < 0:
            from arca.wire.errors import InvalidInput

            raise InvalidInput(f"--format {template!r}: unclosed {{{{")
        out.append(template[i:j])
        expr = template[j + 2:k].strip()
        if expr.startswith("json "):
            import json

            out.append(json.dumps(_lookup(obj, expr[5:].strip())))
        elif expr.startswith("."):
            out.append(_text(_lookup(obj, expr)))
        else:
            from arca.wire.errors import InvalidInput

            raise InvalidInput(f"--format: {{{{{expr}}}}}: only {{{{.Field}}}} and "
                               "{{json .Field}} are understood")
        i = k + 2
    return "".join(out)


def render_each(template: str, objs: list[Any]) -> str:
    """Every object, one line each; ``table TEMPLATE`` adds a header of the field names."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    header = None
    if template.startswith("table"):
        template = template[5:].lstrip()
        header = render(template, _Names())
    lines = [render(template, o) for o in objs]
    if header is not None and "\t" in template:
        rows = [line.split("\t") for line in [header, *lines]]
        if len({len(r) for r in rows}) == 1:
            return columns(rows)
    return "\n".join(([header] if header is not None else []) + lines)


class _Names(dict):  # type: ignore[type-arg]
    """Answers every field with its own name, upper-cased: a table's header row."""

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> _Names:
        return _Names(key.upper())
