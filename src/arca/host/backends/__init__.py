"""The host's TEE backends: one module per TEE behind :class:`.base.Backend`, chosen by name.

A plain registry: name -> module, imported only when that backend is asked for, so the
runtime's hot path never imports the others. Adding a backend means adding its module and
one line here (and its row in :mod:`arca.wire.tees`). Which TEEs exist at all (and their
facts) is the table's business; which of them this build can *launch* is this registry's.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from arca.host.backends.base import Backend

#: Backend name -> module defining ``BACKEND`` (its :class:`~.base.Backend` subclass).
_MODULES = {
    "sim": "arca.host.backends.sim",
    "vm": "arca.host.backends.vm",
}
#: The TEE ``arca run``, ``arca measure`` and ``arca policy generate`` use without ``--tee``.
DEFAULT = "sim"


def names() -> tuple[str, ...]:
    """The TEEs this build can launch, in the order of the table of TEE facts."""
    from arca.wire.tees import TEES

    return tuple(n for n in TEES if n in _MODULES)


def available(name: str) -> bool:
    return name in _MODULES


def get(name: str, *, platform: Any = None) -> Backend:
    """The backend for TEE ``name``. Raises ``InvalidInput`` for a name that is no TEE and
    :class:`~.base.BackendUnavailable` for a TEE this build cannot launch, both naming what is
    known; ``platform`` is passed to the backend (see :class:`~.base.Backend`)."""
    from arca.wire.tees import KNOWN_TEES, NONE

    if name not in KNOWN_TEES or name == NONE:
        from arca.wire.errors import InvalidInput

        raise InvalidInput(f"unknown TEE {name!r} (known: "
                           f"{', '.join(t for t in KNOWN_TEES if t != NONE)})")
    if name not in _MODULES:
        from arca.host.backends.base import BackendUnavailable

        raise BackendUnavailable(f"TEE {name!r} has no backend in this build "
                                 f"(available: {', '.join(names())})")
    # ``__import__`` rather than importlib.import_module: importlib's package (and warnings)
    # costs ~0.7 ms of every Python create.
    backend: Backend = __import__(_MODULES[name], fromlist=["BACKEND"]).BACKEND(platform)
    return backend
