"""Re-export of the error hierarchy (defined in :mod:`arca.wire.errors` so the guest shares it)."""

from arca.wire.errors import *  # noqa: F403
from arca.wire.errors import __doc__ as _wire_doc  # noqa: F401
