"""The host-side lifecycle of a TEE container: its states, transitions and the files behind them.

This is the one place they are written down (docs/ARCHITECTURE.md, "Container lifecycle on the
host", repeats it for readers). runc keeps its own state of the container (``created``,
``running``, ``stopped``); Arca's state says what Arca did around it, and is derived from these
files only (paths under the run directory ``$ARCA_RUN``, see :mod:`.state`)::

    state        files                                                   runc's view
    -----------  ------------------------------------------------------  -----------------
    ABSENT       no containers/<id>/state.json, or one whose runc-root   anything or none
                 names another runc --root (that id there is another
                 container: ``lifecycle._safe_load`` returns ``None``)
    CREATING     state.json "status": "creating"                         none, or being made
                 (+ runc-root, td/<id>/ and config.orig.json as create
                 goes on; no runc-root yet: the caller's)
    CREATED      state.json "status": "created", td/<id>/go, no          running (the agent,
                 containers/<id>/released                                 prestarted)
    RELEASED     state.json "status": "created" and containers/<id>/     running, then stopped
                 released (O_EXCL: exactly one start made it)

Transitions (``arca-runtime`` commands; anything else is refused with :class:`StateError`)::

    ABSENT   --create-->          CREATING   (state written before any side effect)
    CREATING --runc run ok-->     CREATED    (state.created.json renamed over state.json, or
                                              state.json rewritten, by the caller of runc)
    CREATING --runc run failed--> ABSENT     (the backend's undo, config.json restored)
    CREATED  --start-->           RELEASED   (the backend's release: a byte on ``go``)
    CREATING --delete [--force]-> ABSENT     (waits for an orphaned create, then undoes it)
    CREATED  --delete-->          ABSENT     (``runc delete --force``: runc kills it)
    RELEASED --delete-->          ABSENT     (``runc delete``; Arca's part once runc let go)
    any      --state/kill/ps-->   unchanged  (runc's; ``state`` says ``created`` in CREATED)

``create`` of an id that is not ABSENT says it exists; ``start``/``exec`` in CREATING say the
create has not completed; a second ``start`` (RELEASED) is runc's own refusal (already
running / stopped); ``checkpoint``/``restore`` are refused in every state but ABSENT (a TD's
memory must not reach host disk). Only Python reads these files to tell the states apart: the
C front end (``frontend.c``) checks whether ``state.json`` exists under the caller's runc root
and hands every such call over (ADR 0046); ``lifecycle.step`` runs the transitions, in the
sim daemon for the front end or in-process.
"""

from __future__ import annotations

from arca.errors import StateError
from arca.host.runtime import state as st

# ``status`` values in state.json.
CREATING = "creating"
CREATED = "created"

# Derived states (see the table above).
ABSENT = "absent"
RELEASED = "released"


def current(cid: str) -> str:
    """The state of container ``cid`` from its files (``StateError`` if they are corrupt)."""
    return of(st.load(st.validate_id(cid)))


def of(saved: st.ContainerState | None) -> str:
    """The state of a container whose ``state.json`` was loaded as ``saved`` (``None``: there
    is none for the caller, e.g. under another runc root), from the rest of its files."""
    if saved is None:
        return ABSENT
    if saved.status == CREATING:
        return CREATING
    if saved.status != CREATED:
        raise StateError(f"Arca state of container {saved.id} is corrupt: status "
                         f"{saved.status!r}")
    return CREATED if st.unreleased(saved.id) else RELEASED


#: (state, command) -> the state after it; a pair not listed is a call in the wrong state.
TRANSITIONS = {
    (ABSENT, "create"): CREATING,
    (CREATING, "created"): CREATED,
    (CREATING, "undo"): ABSENT,
    (CREATED, "start"): RELEASED,
    (CREATING, "delete"): ABSENT,
    (CREATED, "delete"): ABSENT,
    (RELEASED, "delete"): ABSENT,
    (CREATED, "exec"): CREATED,
    (RELEASED, "exec"): RELEASED,
}

_WHY = {
    (CREATING, "start"): "its create has not completed",
    (CREATING, "exec"): "its create has not completed",
}


def require(cid: str, state: str, command: str) -> str:
    """The state after ``command`` in ``state``; :class:`StateError` naming both otherwise."""
    after = TRANSITIONS.get((state, command))
    if after is None:
        why = _WHY.get((state, command)) or f"it is {state}"
        raise StateError(f"cannot {command} container {cid}: {why}")
    return after
