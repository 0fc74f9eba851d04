"""The ``sim`` backend: a software TD on the host kernel, attested by the sim platform daemon.

**Development only: ``sim`` isolates a TD from other containers, never from this host.**

Launch: the container's process becomes the agent (run from the read-only guest runtime
bind-mounted at ``/.arca``); the TD directory, bind-mounted read-only at ``/run/arca/tee``,
holds the measured ``descriptor.json``, the host-supplied ``process.json``,
``init-data.toml``, the runtime's ``go`` FIFO the prestarted agent waits on until ``start``,
and ``sim.sock``, the TD's own report socket, created by the sim platform
(:mod:`arca.host.simtee`) at registration.

Measurement: ``SHA-384(RFC 8785 JSON of the launch descriptor)`` (ADR 0002); the rootfs
digest is the tree digest of the container's root filesystem (:mod:`arca.host.treedigest`,
cached per image).
"""

from __future__ import annotations

import json

from arca.host.backends.base import Backend, Launch, LaunchInputs, Reference
from arca.host.runtime import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from arca.wire.descriptor import LaunchDescriptor


class SimBackend(Backend):
    name = "sim"
    user_namespace = True

    def _client(self) -> Any:
        """The platform: the daemon itself when it runs ``create`` (fastcreate), else the
        client of its control socket (which starts the daemon on demand)."""
        if self.platform is not None:
            return self.platform
        from arca.host.simtee import client

        return client

    def check_host(self) -> None:
        """Runs wherever runc runs: the platform is a daemon started on demand."""

    def reference(self, inputs: LaunchInputs) -> Reference:
        from arca.host.treedigest import rootfs_digest
        from arca.wire.descriptor import LaunchDescriptor

        descriptor = LaunchDescriptor(self.name, inputs.guest_runtime.digest,
                                      rootfs_digest(inputs.rootfs), inputs.process)
        return self.reference_for(descriptor, inputs.init_data, {})

    def reference_for(self, descriptor: LaunchDescriptor, init_data: bytes | None,
                      extra: Mapping[str, str]) -> Reference:
        return Reference(self.name, descriptor.measurement().hex(),
                         self.init_data_hash(init_data).hex(), descriptor, dict(extra))

    def prepare(self, launch: Launch, inputs: LaunchInputs, ref: Reference,
                config: dict[str, Any]) -> dict[str, Any]:
        from arca.host.runtime.bundle import rewrite_config

        td, gr = launch.td_dir, inputs.guest_runtime
        descriptor = ref.descriptor.to_json()
        st.write_atomic(td / "descriptor.json", json.dumps(descriptor).encode(), 0o644)
        proc = config.get("process")
        st.write_atomic(td / "process.json", json.dumps(proc).encode(), 0o644)
        if inputs.init_data is not None:
            st.write_atomic(td / "init-data.toml", inputs.init_data, 0o644)
        self._client().register(launch.cid, descriptor, inputs.init_data)
        new = rewrite_config(config, td_dir=td, guest_runtime_path=gr.path,
                             agent_args=list(gr.agent_args()), agent_env=list(gr.agent_env()))
        # Host uids nobody else has (issue 13 item 2, ADR 0048): the TD's processes run on
        # this kernel, where a local user of the same uid could read their /proc.
        from arca.host.runtime.userns import isolate_td

        return isolate_td(launch.cid, new, str(inputs.rootfs), str(td))

    def undo(self, cid: str) -> None:
        """Unregister the TD (without a running daemon: drop its registration file), then
        unmount its root and free its uid range."""
        from arca.host.runtime.userns import release_td

        try:
            self._client().unregister(cid)
        finally:
            release_td(cid)


BACKEND = SimBackend
