"""Arca's image store: pull (OCI distribution), load (OCI layout/archive), unpack once per layer,
and mount as overlayfs. See :mod:`.store` for the on-disk layout and its guarantees.

The names below are imported on first use (PEP 562): ``arca run`` needs the store but not the
pull/load machinery, and importing a submodule runs this file first."""

from __future__ import annotations

import importlib

# No typing at run time: ``arca run`` imports this package (for ``mount``) on every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from arca.host.images.ingest import load, load_archive, load_layout, pull, resolve
    from arca.host.images.store import ImageRecord, ImageStore, LayerRecord

__all__ = ["ImageRecord", "ImageStore", "LayerRecord", "load", "load_archive", "load_layout",
           "pull", "resolve"]
_HOME = {"ImageRecord": "store", "ImageStore": "store", "LayerRecord": "store",
         "load": "ingest", "load_archive": "ingest", "load_layout": "ingest", "pull": "ingest",
         "resolve": "ingest"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
