"""``arca run`` network plans: -p parsing, what pasta is told, the broker's loopback port."""

from __future__ import annotations

import pytest

from arca.host.containers.network import (
    NetworkPlan,
    PortMapping,
    loopback_broker_ports,
    pasta_argv,
    spec_network,
)
from arca.wire.errors import InvalidInput


@pytest.mark.parametrize(("spec", "expected"), [
    ("8080:80", PortMapping("", 8080, 80, "tcp")),
    ("8080:80/udp", PortMapping("", 8080, 80, "udp")),
    ("127.0.0.1:8080:80", PortMapping("127.0.0.1", 8080, 80, "tcp")),
    ("0.0.0.0:1:65535/tcp", PortMapping("0.0.0.0", 1, 65535, "tcp")),
])
def test_publish_specs(spec: str, expected: PortMapping) -> None:
    assert PortMapping.parse(spec) == expected
    assert PortMapping.from_json(expected.to_json()) == expected


@pytest.mark.parametrize("spec", ["80", "", ":80", "8080:", "x:80", "0:80", "70000:80",
                                  "8080:80/sctp", "::1:8080:80", "host:8080:80", "1.2.3:80:80",
                                  "8080:80/", "-1:80"])
def test_bad_publish_specs_are_one_line_errors(spec: str) -> None:
    with pytest.raises(InvalidInput) as e:
        PortMapping.parse(spec)
    assert "\n" not in str(e.value)


def test_pasta_forwards_only_what_was_asked() -> None:
    plan = NetworkPlan.parse("private", ["127.0.0.1:8080:80", "5353:53/udp"],
                             b'version = "0.1.0"\n[data]\nkbs_url = "http://127.0.0.1:8999"\n')
    argv = pasta_argv(plan, "/run/x/netns/c", "/run/x/netns/c.pasta.pid")
    pairs = list(zip(argv, argv[1:], strict=False))
    assert ("-t", "127.0.0.1/8080:80") in pairs and ("-u", "5353:53") in pairs
    assert ("-T", "8999") in pairs and ("-U", "none") in pairs
    assert "--no-map-gw" in argv and "auto" not in argv
    bare = pasta_argv(NetworkPlan.parse(None, [], None), "/n", "/n.pid")
    for flag in ("-t", "-u", "-T", "-U"):
        assert bare[bare.index(flag) + 1] == "none"


@pytest.mark.parametrize(("url", "ports"), [
    ("http://127.0.0.1:8080", [8080]), ("http://localhost:81/x", [81]),
    ("https://127.0.0.1", [443]), ("http://[::1]:9", [9]), ("http://user@127.0.0.2:7", [7]),
    ("https://kbs.example:8080", []), ("http://10.0.0.1:80", []),
])
def test_broker_on_the_host_loopback(url: str, ports: list[int]) -> None:
    raw = f'version = "0.1.0"\n[data]\nkbs_url = "{url}"\n'.encode()
    assert loopback_broker_ports(raw) == ports
    assert loopback_broker_ports(None) == []
    assert loopback_broker_ports(b"not toml [") == []  # the runtime refuses it, with its message


def test_modes_and_spec() -> None:
    with pytest.raises(InvalidInput, match="--network"):
        NetworkPlan.parse("bridge", [], None)
    with pytest.raises(InvalidInput, match="private network"):
        NetworkPlan.parse("host", ["80:80"], None)
    with pytest.raises(InvalidInput, match="twice"):
        NetworkPlan.parse("private", ["80:80", "127.0.0.1:80:81"], None)
    assert spec_network(NetworkPlan("host"), "/n", "/r") == (None, [])
    ns, mounts = spec_network(NetworkPlan("private"), "/n", "/r")
    assert ns == {"type": "network", "path": "/n"}
    assert [m["destination"] for m in mounts] == ["/sys", "/etc/resolv.conf"]
    ns, mounts = spec_network(NetworkPlan("none"), "/n", "/r")
    assert ns == {"type": "network"} and [m["destination"] for m in mounts] == ["/sys"]
    plan = NetworkPlan.parse("private", ["8080:80"], None)
    assert NetworkPlan.from_json(plan.to_json()).to_json() == plan.to_json()
    assert plan.publish[0].qemu_hostfwd() == "tcp::8080-:80"
