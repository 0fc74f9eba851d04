"""Arca's image store: pull (OCI distribution), load (OCI layout/archive), unpack once per layer,
and mount as overlayfs. See :mod:`.store` for the on-disk layout and its guarantees."""

from arca.host.images.ingest import load_archive, load_layout, pull, resolve
from arca.host.images.store import ImageRecord, ImageStore, LayerRecord

__all__ = ["ImageRecord", "ImageStore", "LayerRecord", "load_archive", "load_layout", "pull",
           "resolve"]
