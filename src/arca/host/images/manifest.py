"""Parsing of OCI / Docker v2 manifests, image indexes and image configs (untrusted input).

Everything here comes from a registry or an archive, so each document is parsed into a typed,
frozen model or refused with :class:`BadManifest` naming the field. Sizes are bounded before
parsing (see the constants). Docker schema 1 manifests are refused: they carry no content
digests for their configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from arca.host.images.digest import Digest
from arca.host.images.errors import BadManifest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)

#: Layer media type -> compression ("" = none). Docker's foreign layers are refused (their
#: content lives at URLs outside the registry).
LAYER_TYPES: dict[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "",
}

#: Manifests and indexes are small JSON documents; 4 MiB is the limit registries use too.
MAX_MANIFEST_BYTES = 4 << 20
#: Image configs carry history and can be larger than manifests, but not by much.
MAX_CONFIG_BYTES = 8 << 20
#: Layers per image: overlayfs mount options are limited to one page, ~40 store paths.
MAX_LAYERS = 40


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.annotations:
            obj["annotations"] = dict(self.annotations)
        return obj


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]

    def select(self, want: Platform) -> Descriptor:
        """The manifest for ``want`` (variant ignored when the entry has none)."""
        for d in self.manifests:
            p = d.platform
            if p and p.os == want.os and p.architecture == want.architecture and (
                not want.variant or not p.variant or p.variant == want.variant
            ):
                return d
        have = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
        raise BadManifest(f"image index has no manifest for {want} (platforms: {have})")


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the runtime needs; ``raw`` keeps the whole document."""

    os: str
    architecture: str
    diff_ids: tuple[Digest, ...]
    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def load_json(data: bytes, limit: int, what: str) -> dict[str, Any]:
    if len(data) > limit:
        raise BadManifest(f"{what} is {len(data)} bytes, more than the limit of {limit}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: deep nesting
        raise BadManifest(f"{what} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadManifest(f"{what} must be a JSON object")
    return obj


def _str(obj: dict[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise BadManifest(f"{what}: field {key!r} must be a string")
    return value


def _str_list(obj: dict[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadManifest(f"{what}: field {key!r} must be a list of strings")
    return tuple(value)


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise BadManifest(f"{what} must be a JSON object")
    size = obj.get("size")
    if type(size) is not int or size < 0:
        raise BadManifest(f"{what}: size must be a non-negative integer")
    platform = None
    if "platform" in obj:
        p = obj["platform"]
        if not isinstance(p, dict):
            raise BadManifest(f"{what}: platform must be a JSON object")
        platform = Platform(_str(p, "os", f"{what}.platform"),
                            _str(p, "architecture", f"{what}.platform"),
                            _str(p, "variant", f"{what}.platform", ""))
    ann = obj.get("annotations") or {}
    if not isinstance(ann, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ann.items()
    ):
        raise BadManifest(f"{what}: annotations must map strings to strings")
    return Descriptor(_str(obj, "mediaType", what, ""),
                      Digest.parse(obj.get("digest"), f"{what}.digest"), size, platform,
                      dict(ann))


def detect_media_type(obj: dict[str, Any], header_type: str = "") -> str:
    """The document's media type: its own field, else the HTTP header, else by shape."""
    mt = obj.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if obj.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    if header_type:
        return header_type.split(";")[0].strip()
    if "manifests" in obj:
        return OCI_INDEX
    if "layers" in obj:
        return OCI_MANIFEST
    return ""


def parse_manifest(data: bytes, header_type: str = "") -> Manifest | Index:
    what = "manifest"
    obj = load_json(data, MAX_MANIFEST_BYTES, what)
    mt = detect_media_type(obj, header_type)
    if obj.get("schemaVersion") != 2:
        raise BadManifest(f"{what}: unsupported schemaVersion {obj.get('schemaVersion')!r} "
                          "(only OCI and Docker schema 2 are supported)")
    if mt in INDEX_TYPES:
        items = obj.get("manifests")
        if not isinstance(items, list):
            raise BadManifest("image index: 'manifests' must be a list")
        return Index(mt, tuple(parse_descriptor(d, f"image index.manifests[{i}]")
                               for i, d in enumerate(items)))
    if mt not in MANIFEST_TYPES:
        raise BadManifest(f"{what}: unsupported media type {mt!r}")
    config = parse_descriptor(obj.get("config"), f"{what}.config")
    if config.media_type not in CONFIG_TYPES:
        raise BadManifest(f"{what}: unsupported config media type {config.media_type!r}")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise BadManifest(f"{what}: 'layers' must be a list")
    if len(layers) > MAX_LAYERS:
        raise BadManifest(f"{what}: {len(layers)} layers, more than the limit of {MAX_LAYERS}")
    descs = tuple(parse_descriptor(d, f"{what}.layers[{i}]") for i, d in enumerate(layers))
    for i, d in enumerate(descs):
        if d.media_type not in LAYER_TYPES:
            raise BadManifest(f"{what}.layers[{i}]: unsupported layer media type "
                              f"{d.media_type!r}")
    return Manifest(mt, config, descs)


def parse_config(data: bytes) -> ImageConfig:
    what = "image config"
    obj = load_json(data, MAX_CONFIG_BYTES, what)
    rootfs = obj.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise BadManifest(f"{what}: rootfs.type must be 'layers'")
    ids = rootfs.get("diff_ids")
    if not isinstance(ids, list):
        raise BadManifest(f"{what}: rootfs.diff_ids must be a list")
    diff_ids = tuple(Digest.parse(d, f"{what}.rootfs.diff_ids[{i}]") for i, d in enumerate(ids))
    cfg = obj.get("config") or {}
    if not isinstance(cfg, dict):
        raise BadManifest(f"{what}: 'config' must be a JSON object")
    c = f"{what}.config"
    return ImageConfig(
        os=_str(obj, "os", what, ""),
        architecture=_str(obj, "architecture", what, ""),
        diff_ids=diff_ids,
        user=_str(cfg, "User", c, "") if cfg.get("User") is not None else "",
        env=_str_list(cfg, "Env", c),
        entrypoint=_str_list(cfg, "Entrypoint", c),
        cmd=_str_list(cfg, "Cmd", c),
        working_dir=_str(cfg, "WorkingDir", c, "") if cfg.get("WorkingDir") is not None else "",
        raw=obj,
    )
