"""Image references: ``[registry[:port]/]repository[:tag][@digest]`` as Docker parses them.

A first component with a ``.`` or ``:`` (or ``localhost``) names the registry; otherwise the
registry is Docker Hub and one-component names get the ``library/`` prefix. No tag and no
digest means ``:latest``.

A leading ``http://`` or ``https://`` is accepted and kept in :attr:`Reference.scheme`: it says
how to reach the registry (``http://`` = plain HTTP on purpose, see :mod:`.registry`), not which
image, so it is not part of the name and not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from arca.host.images.digest import Digest
from arca.host.images.errors import BadManifest, BadReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None
    #: "http" or "https" when the reference was written with that scheme, else None
    scheme: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, ref: str) -> Reference:
        if not ref or len(ref) > 512 or any(c.isspace() for c in ref):
            raise BadReference(f"invalid image reference {ref!r}")
        for prefix in ("http://", "https://"):
            if ref.lower().startswith(prefix):
                rest = ref[len(prefix):]
                if "://" in rest:
                    raise BadReference(f"invalid image reference {ref!r}: two schemes")
                parsed = cls.parse(rest)
                if parsed.registry == DOCKER_HUB and not rest.startswith(DOCKER_HUB + "/"):
                    raise BadReference(f"image reference {ref!r}: {prefix} needs a registry "
                                       "host (http://HOST[:PORT]/REPOSITORY[:TAG])")
                return cls(parsed.registry, parsed.repository, parsed.tag, parsed.digest,
                           prefix[:-3])
        name, _, dig = ref.partition("@")
        digest = None
        if dig:
            try:
                digest = Digest.parse(dig, "reference digest")
            except BadManifest as e:
                raise BadReference(f"invalid image reference {ref!r}: {e}") from None
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise BadReference(f"invalid tag {tag!r} in image reference {ref!r}")
        parts = name.split("/")
        if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, parts = parts[0], parts[1:]
            if not _HOST.fullmatch(registry):
                raise BadReference(f"invalid registry {registry!r} in image reference {ref!r}")
        else:
            registry = DOCKER_HUB
            if len(parts) == 1:
                parts = ["library", *parts]
        if not parts or not all(_COMPONENT.fullmatch(p) for p in parts):
            raise BadReference(f"invalid repository name in image reference {ref!r}")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, "/".join(parts), tag, digest)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when given, else the tag."""
        return str(self.digest) if self.digest else str(self.tag)

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def normalize_name(ref: str) -> str:
    return str(Reference.parse(ref))
