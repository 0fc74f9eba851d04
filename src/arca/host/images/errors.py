"""Errors of the image store, placed in Arca's one hierarchy (:mod:`arca.wire.errors`).

Who is at fault decides the base class: a registry or archive sending bad bytes is
:class:`~arca.wire.errors.InvalidInput` (exit code 2 in the CLI), a registry we cannot reach is
temporary trouble (:class:`RegistryUnavailable`), a missing image is
:class:`~arca.wire.errors.NotFound`.
"""

from __future__ import annotations

from arca.wire.errors import ArcaError, InvalidInput, NotFound


class ImageError(ArcaError):
    """Something about an image or the store went wrong."""


class DigestMismatch(InvalidInput):
    """Content did not hash to the digest (or size) that referenced it."""


class UnsafeArchive(InvalidInput):
    """A layer tar holds an entry that could escape or abuse the unpack directory."""


class BadManifest(InvalidInput):
    """A manifest, index, config or layout document is malformed or unsupported."""


class BadReference(InvalidInput):
    """An image reference string could not be parsed."""


class RegistryError(ImageError):
    """The registry answered, but not with what we asked for (auth, 404, protocol)."""


class RegistryUnauthorized(RegistryError):
    """The registry (or its token service) wants credentials it was not given or refused."""


class RegistryNotFound(RegistryError):
    """The registry has no such repository, manifest or blob (HTTP 404)."""


class RegistryUnavailable(ImageError):
    """The registry could not be reached or the transfer broke off; worth a retry."""


class ImageNotFound(NotFound):
    """No image of that name or digest is in the store."""


class ImageInUse(ImageError):
    """The image is used by a container and cannot be removed without ``--force``."""
