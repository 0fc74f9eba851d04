"""Swapping ``os.environ`` entries for the duration of one piece of work, and back (the sim
daemon and the runtime's fast create run a request under the caller's ``ARCA_*`` variables).
Only ``os`` is imported: both are on the runtime's hot path."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ms on the runtime's hot path: see arca.wire.record
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def swap_environ(keys: Iterable[str], env: Mapping[str, str]) -> dict[str, str | None]:
    """Make ``keys`` exactly ``env`` in ``os.environ`` (a key ``env`` lacks is unset); returns
    their values before (None: was unset) for :func:`restore_environ`."""
    keys = list(keys)
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update(env)
    return saved


def restore_environ(saved: Mapping[str, str | None]) -> None:
    """Put back what :func:`swap_environ` returned."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
