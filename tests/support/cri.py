"""A minimal Kubernetes CRI v1 client for tests: what the kubelet says to containerd, over gRPC.

``cri.proto`` beside this file is a hand-written subset of ``k8s.io/cri-api``'s
``pkg/apis/runtime/v1/api.proto`` (package ``runtime.v1``): only the calls and fields the
tests use, each with its field number from that file (protobuf identifies fields by number,
so a subset is wire-compatible). It is compiled once per process with ``grpc_tools.protoc``
into a temporary directory. Not a general client: no streaming calls, no stats.
"""

from __future__ import annotations

import functools
import importlib
import pathlib
import sys
import tempfile
import types
from dataclasses import dataclass
from typing import Any

#: The CRI subset (a ``.proto`` beside this file, so tools read it as the schema it is).
CRI_PROTO = pathlib.Path(__file__).with_name("cri.proto")


def grpc_available() -> bool:
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def modules() -> tuple[types.ModuleType, types.ModuleType]:
    """``(cri_pb2, cri_pb2_grpc)``, generated from :data:`CRI_PROTO` on first use."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="arca-cri-proto-")
    rc = protoc.main(["protoc", f"-I{CRI_PROTO.parent}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(CRI_PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed on the CRI subset ({rc})")
    sys.path.insert(0, out)
    try:
        return importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc")
    finally:
        sys.path.remove(out)


@dataclass
class CriClient:
    """Runtime and image services of one containerd CRI endpoint (a unix socket path)."""

    address: str
    timeout: float = 120

    def __post_init__(self) -> None:
        import grpc

        self.pb, grpc_mod = modules()
        self.channel = grpc.insecure_channel(f"unix://{self.address}")
        self.runtime = grpc_mod.RuntimeServiceStub(self.channel)
        self.images = grpc_mod.ImageServiceStub(self.channel)

    def call(self, stub: Any, method: str, **fields: Any) -> Any:
        request = getattr(self.pb, f"{method}Request")(**fields)
        return getattr(stub, method)(request, timeout=self.timeout)

    def close(self) -> None:
        self.channel.close()
