"""The host runtime's boundary checks (``arca.host.runtime.tdchecks``) on configs and rootfs
trees: what only the host can see — a policy-allowed mount over the image's content, through a
symlink, onto a file — and the namespace and hook rules, table-driven."""

from __future__ import annotations

import pathlib

import pytest

from arca.host.runtime.tdchecks import allowed_mounts, check_launch
from arca.wire.errors import PolicyDenied
from arca.wire.initdata import ExecPolicy

NS = [{"type": t} for t in ("pid", "ipc", "mount", "uts", "network")]


def init(policy: str) -> bytes:
    return f"version = \"0.1.0\"\n[data]\npolicy = '{policy}'\n".encode()


@pytest.fixture
def rootfs(tmp_path: pathlib.Path) -> pathlib.Path:
    r = tmp_path / "rootfs"
    (r / "bin").mkdir(parents=True)
    (r / "bin" / "app").write_text("code")
    (r / "empty").mkdir()
    (r / "data").symlink_to("bin")
    return r


def config(*mounts: tuple[str, str], **linux: object) -> dict[str, object]:
    return {"mounts": [{"destination": d, "type": t, "source": "/src", "options": ["rbind"]}
                       for d, t in mounts],
            "linux": {"namespaces": NS, **linux}}


ALLOW = init('{"allow_mounts": ["/empty", "/data", "/bin/app", "/new/dir"]}')
CASES = {
    "empty dir": (config(("/empty", "bind")), ALLOW, None),
    "missing path": (config(("/new/dir", "bind")), ALLOW, None),
    "symlink to /bin": (config(("/data", "bind")), ALLOW, "symbolic link"),
    "a file of the image": (config(("/bin/app", "bind")), ALLOW, "covers a file"),
    "not allowed": (config(("/srv", "bind")), ALLOW, "policy.allow_mounts"),
    "dotted path to /.arca": (config(("/x/../.arca", "bind")), ALLOW, "guest runtime"),
    "tmpfs at /run": (config(("/run", "tmpfs")), None, None),
    "bind at /run": (config(("/run", "bind")), None, "policy.allow_mounts"),
    "host pid namespace": ({"linux": {"namespaces": NS[1:]}}, None, "the host's pid"),
    "shared pid allowed": ({"linux": {"namespaces": NS[1:]}},
                           init('{"allow_namespaces": ["pid"]}'), None),
    "ipc of a non-sandbox": ({"linux": {"namespaces": [*NS[:1], {"type": "ipc",
                                                                   "path": "/proc/1/ns/ipc"},
                                                       *NS[2:]]}}, None, "joining the ipc"),
    "prestart hook (host side)": ({"linux": {"namespaces": NS},
                                   "hooks": {"prestart": [{"path": "/x"}]}}, None, None),
    "createContainer hook": ({"linux": {"namespaces": NS},
                              "hooks": {"createContainer": [{"path": "/x"}]}}, None, "hook"),
    "hooks allowed": ({"linux": {"namespaces": NS}, "hooks": {"startContainer": [{"path": "/x"}]}},
                      init('{"allow_hooks": true}'), None),
}


@pytest.mark.parametrize("cfg,raw,refusal", CASES.values(), ids=CASES.keys())
def test_launch_checks(rootfs: pathlib.Path, cfg: dict, raw: bytes | None,  # type: ignore[type-arg]
                       refusal: str | None) -> None:
    if refusal is None:
        check_launch("c", cfg, raw, str(rootfs), "/run/runc")
    else:
        with pytest.raises(PolicyDenied, match="TEE container c: ") as e:
            check_launch("c", cfg, raw, str(rootfs), "/run/runc")
        assert refusal in str(e.value)


def test_the_allowed_set_is_shown() -> None:
    shown = allowed_mounts(ExecPolicy(allow_mounts=("/data",)))
    assert "/proc/**" in shown and "/etc/resolv.conf" in shown and shown[-1] == "/data"
