"""The implicit pull of ``arca run`` (``--pull missing|always|never``), as ``podman run`` does.

``missing`` (the default) pulls only when no image in the store matches the reference; it is
asked only after the engine's run plan and the store missed, so a run of an image already in
the store costs no registry round trip and no import of the pull machinery (httpx, rich).
``always`` asks the registry for the reference's manifest on every run and pulls only when its
digest (or, for an index, the digest of its linux/amd64 manifest) differs from the stored
image's, so an unchanged image downloads no blob again. ``never`` refuses an image not in the
store. References written ``oci:PATH[:TAG]`` are loaded from that path whatever the policy.

The pull itself is the image store's (:func:`arca.host.images.ingest.pull`) with the options of
``arca image pull`` and the same rules on plain HTTP and credentials; credentials are asked for
(``--creds``, ``$ARCA_REGISTRY_CREDS``, Docker's config.json) only when a pull happens. A failed
pull is one line naming the reference and the cause and leaves no image behind (the store
records an image only once all its content is in place).

Not here: the store's own pull logic, which this module only calls.
"""

from __future__ import annotations

from arca.wire.errors import ArcaError

# Imported by a run only when it may pull (the image was not found, or --pull always); the
# image store's pull machinery is imported inside the functions.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from arca.host.containers.engine import PullSettings
    from arca.host.images.reference import Reference
    from arca.host.images.registry import Credentials, RegistryClient
    from arca.host.images.store import ImageStore

def pull_missing(store: ImageStore, image: str, settings: PullSettings) -> None:
    """Pull ``image``, which is not in the store (a failure says so too: the name may be a
    typo, not meant for a registry at all)."""
    _pull(store, image, settings, f"image {image!r} is not in the store, and ")


def refresh(store: ImageStore, image: str, settings: PullSettings) -> None:
    """``--pull always``: pull ``image`` unless the registry's manifest is the stored one."""
    from arca.host.images.errors import ImageNotFound

    try:
        local = store.get(image)
    except ImageNotFound:
        local = None
    if local is None or not _up_to_date(image, local.digest, settings):
        _pull(store, image, settings)


def _up_to_date(image: str, local_digest: str, settings: PullSettings) -> bool:
    """Whether the registry's manifest for ``image`` is the stored one (one manifest GET;
    no blob is fetched)."""
    from arca.host.images.digest import Digest
    from arca.host.images.ingest import DEFAULT_PLATFORM
    from arca.host.images.manifest import Index, parse_manifest
    from arca.host.images.reference import Reference

    ref = Reference.parse(image)
    if ref.digest is not None:
        return str(ref.digest) == local_digest  # content-addressed: nothing can have changed
    try:
        with _client(ref, settings) as client:
            data, ctype = client.get_manifest(ref.repository, ref.ref)
        if str(Digest.of(data)) == local_digest:
            return True
        doc = parse_manifest(data, ctype)
        return (isinstance(doc, Index)
                and str(doc.select(DEFAULT_PLATFORM).digest) == local_digest)
    except ArcaError as e:
        raise _failed(str(ref), e) from None


def _client(ref: Reference, settings: PullSettings) -> RegistryClient:
    """A registry client set up as :func:`arca.host.images.ingest.pull` sets up its own: the
    same rules on ``http://``/``https://`` references, ``--insecure`` and credentials."""
    from arca.host.images.registry import RegistryClient

    return RegistryClient(
        ref.api_host, credentials=_credentials(str(ref), settings),
        insecure=settings.insecure and ref.scheme != "https", ca_file=settings.ca_file,
        plain_http=ref.scheme == "http")


def _credentials(ref: str, settings: PullSettings) -> Credentials | None:
    return settings.credentials(ref) if settings.credentials is not None else None


def _pull(store: ImageStore, image: str, settings: PullSettings, context: str = "") -> None:
    from arca.host.images.ingest import pull
    from arca.host.images.reference import Reference

    name = str(Reference.parse(image))
    try:
        kwargs = dict(credentials=_credentials(image, settings), insecure=settings.insecure,
                      ca_file=settings.ca_file)
        bars = None
        if not settings.quiet:
            from arca.host.images.progress import for_stderr

            bars = for_stderr()
        if bars is None:
            pull(store, image, **kwargs)  # type: ignore[arg-type]
            return
        with bars:
            bars.message(f"pulling {name}")
            pull(store, image, progress=bars, **kwargs)  # type: ignore[arg-type]
    except ArcaError as e:
        raise _failed(name, e, context) from None


def _failed(name: str, err: ArcaError, context: str = "") -> ArcaError:
    """``err`` (same class, so the exit code stays the store's) as one line naming the
    reference and, where the store's error type says it, the kind of cause."""
    from arca.host.images.errors import (
        RegistryNotFound,
        RegistryUnauthorized,
        RegistryUnavailable,
    )

    detail = " ".join(str(err).split())
    cause = ("registry unreachable" if isinstance(err, RegistryUnavailable)
             else "unauthorized" if isinstance(err, RegistryUnauthorized)
             else "manifest unknown" if isinstance(err, RegistryNotFound)
             and "/manifests/" in detail else None)
    msg = f"{context}cannot pull image {name}: {cause + ': ' if cause else ''}{detail}"
    try:
        return type(err)(msg)
    except TypeError:
        return err
