"""A minimal Kubernetes CRI v1 client for tests: what the kubelet says to containerd, over gRPC.

The ``.proto`` below is a hand-written subset of ``k8s.io/cri-api``'s
``pkg/apis/runtime/v1/api.proto`` (package ``runtime.v1``): only the calls and fields the
tests use, each with its field number from that file (protobuf identifies fields by number,
so a subset is wire-compatible). It is compiled once per process with ``grpc_tools.protoc``
into a temporary directory. Not a general client: no streaming calls, no stats.
"""

from __future__ import annotations

import functools
import importlib
import sys
import tempfile
import types
from dataclasses import dataclass
from typing import Any

CRI_PROTO = """
syntax = "proto3";
package runtime.v1;

service RuntimeService {
  rpc Version(VersionRequest) returns (VersionResponse) {}
  rpc RunPodSandbox(RunPodSandboxRequest) returns (RunPodSandboxResponse) {}
  rpc StopPodSandbox(StopPodSandboxRequest) returns (StopPodSandboxResponse) {}
  rpc RemovePodSandbox(RemovePodSandboxRequest) returns (RemovePodSandboxResponse) {}
  rpc CreateContainer(CreateContainerRequest) returns (CreateContainerResponse) {}
  rpc StartContainer(StartContainerRequest) returns (StartContainerResponse) {}
  rpc StopContainer(StopContainerRequest) returns (StopContainerResponse) {}
  rpc RemoveContainer(RemoveContainerRequest) returns (RemoveContainerResponse) {}
  rpc ContainerStatus(ContainerStatusRequest) returns (ContainerStatusResponse) {}
}

service ImageService {
  rpc PullImage(PullImageRequest) returns (PullImageResponse) {}
}

message VersionRequest { string version = 1; }
message VersionResponse {
  string version = 1;
  string runtime_name = 2;
  string runtime_version = 3;
  string runtime_api_version = 4;
}

enum NamespaceMode { POD = 0; CONTAINER = 1; NODE = 2; TARGET = 3; }
message NamespaceOption {
  NamespaceMode network = 1;
  NamespaceMode pid = 2;
  NamespaceMode ipc = 3;
  string target_id = 4;
}
message LinuxSandboxSecurityContext { NamespaceOption namespace_options = 1; }
message LinuxPodSandboxConfig {
  string cgroup_parent = 1;
  LinuxSandboxSecurityContext security_context = 2;
}
message PodSandboxMetadata {
  string name = 1;
  string uid = 2;
  string namespace = 3;
  uint32 attempt = 4;
}
message PodSandboxConfig {
  PodSandboxMetadata metadata = 1;
  string hostname = 2;
  string log_directory = 3;
  map<string, string> labels = 6;
  map<string, string> annotations = 7;
  LinuxPodSandboxConfig linux = 8;
}
message RunPodSandboxRequest {
  PodSandboxConfig config = 1;
  string runtime_handler = 2;
}
message RunPodSandboxResponse { string pod_sandbox_id = 1; }
message StopPodSandboxRequest { string pod_sandbox_id = 1; }
message StopPodSandboxResponse {}
message RemovePodSandboxRequest { string pod_sandbox_id = 1; }
message RemovePodSandboxResponse {}

message ImageSpec {
  string image = 1;
  map<string, string> annotations = 2;
}
message KeyValue {
  string key = 1;
  string value = 2;
}
message LinuxContainerSecurityContext { NamespaceOption namespace_options = 3; }
message LinuxContainerConfig { LinuxContainerSecurityContext security_context = 2; }
message ContainerMetadata {
  string name = 1;
  uint32 attempt = 2;
}
message ContainerConfig {
  ContainerMetadata metadata = 1;
  ImageSpec image = 2;
  repeated string command = 3;
  repeated string args = 4;
  string working_dir = 5;
  repeated KeyValue envs = 6;
  map<string, string> labels = 9;
  map<string, string> annotations = 10;
  string log_path = 11;
  LinuxContainerConfig linux = 15;
}
message CreateContainerRequest {
  string pod_sandbox_id = 1;
  ContainerConfig config = 2;
  PodSandboxConfig sandbox_config = 3;
}
message CreateContainerResponse { string container_id = 1; }
message StartContainerRequest { string container_id = 1; }
message StartContainerResponse {}
message StopContainerRequest {
  string container_id = 1;
  int64 timeout = 2;
}
message StopContainerResponse {}
message RemoveContainerRequest { string container_id = 1; }
message RemoveContainerResponse {}

enum ContainerState {
  CONTAINER_CREATED = 0;
  CONTAINER_RUNNING = 1;
  CONTAINER_EXITED = 2;
  CONTAINER_UNKNOWN = 3;
}
message ContainerStatusRequest {
  string container_id = 1;
  bool verbose = 2;
}
message ContainerStatus {
  string id = 1;
  ContainerMetadata metadata = 2;
  ContainerState state = 3;
  int64 created_at = 4;
  int64 started_at = 5;
  int64 finished_at = 6;
  int32 exit_code = 7;
  string reason = 10;
  string message = 11;
  string log_path = 15;
}
message ContainerStatusResponse {
  ContainerStatus status = 1;
  map<string, string> info = 2;
}

message AuthConfig {
  string username = 1;
  string password = 2;
}
message PullImageRequest {
  ImageSpec image = 1;
  AuthConfig auth = 2;
  PodSandboxConfig sandbox_config = 3;
}
message PullImageResponse { string image_ref = 1; }
"""


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
    with open(f"{out}/cri.proto", "w") as f:
        f.write(CRI_PROTO)
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}",
                      f"{out}/cri.proto"])
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
