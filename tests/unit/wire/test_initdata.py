"""Init-data model: the CoCo TOML, Arca's keys, strictness, digests, annotation decoding."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.runtime.bundle import decode_annotation
from arca.host.simtee.platform import init_data_hash
from arca.wire.errors import InvalidInput
from arca.wire.initdata import (
    MAX_INIT_DATA_BYTES,
    AgentOptions,
    ExecPolicy,
    InitData,
    InitDataError,
    Resource,
)

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

FULL = f'''version = "0.1.0"
algorithm = "sha256"

[data]
kbs_url = "https://kbs.example:8080"
kbs_cert = """{CERT}"""
resources = """
[[resource]]
path = "default/key/app"
name = "app.key"
env = "APP_KEY"

[[resource]]
path = "default/cert/tls"
name = "tls.pem"
"""
policy = """
allow_args = [["/bin/sh", "-c", "echo *"], ["/app", "..."]]
allow_env = ["LOG_*"]
allow_exec = true
"""
agent = """
kbs_timeout = 2.5
kbs_retries = 5
kbs_backoff = 0.1
"""
'''.encode()


def doc(data: str = "", algorithm: str | None = "sha384", version: str = "0.1.0") -> bytes:
    head = f'version = "{version}"\n'
    if algorithm is not None:
        head += f'algorithm = "{algorithm}"\n'
    return (head + "[data]\n" + data).encode()


def test_full_document() -> None:
    init = InitData.parse(FULL)
    assert init.algorithm == "sha256"
    assert init.kbs_url == "https://kbs.example:8080"
    assert init.kbs_cert == CERT
    assert init.resources == (Resource("default/key/app", "app.key", "APP_KEY", True),
                              Resource("default/cert/tls", "tls.pem", None, True))
    assert init.policy == ExecPolicy((("/bin/sh", "-c", "echo *"), ("/app", "...")),
                                     ("LOG_*",), True)
    assert init.agent == AgentOptions(2.5, 5, 0.1)
    assert init.raw == FULL


@pytest.mark.parametrize("alg,size", [("sha256", 32), ("sha384", 48), ("sha512", 64)])
def test_digest_per_algorithm_and_padding(alg: str, size: int) -> None:
    raw = doc(algorithm=alg)
    init = InitData.parse(raw)
    want = hashlib.new(alg, raw).digest()
    assert init.digest() == want and len(want) == size
    assert init_data_hash(init.raw) == want[:48].ljust(48, b"\0")


def test_default_algorithm_is_sha384_and_empty_data_is_fine() -> None:
    init = InitData.parse(doc(algorithm=None))
    assert init.algorithm == "sha384"
    assert init.kbs_url is None and init.resources == () and init.policy == ExecPolicy()


def test_json_embedded_documents() -> None:
    res = json.dumps({"resource": [{"path": "r/t/x", "name": "x", "file": False, "env": "X"}]})
    pol = json.dumps({"allow_env": ["A"]})
    init = InitData.parse(doc(f"kbs_url = 'http://k'\nresources = '{res}'\npolicy = '{pol}'\n"))
    assert init.resources == (Resource("r/t/x", "x", "X", False),)
    assert init.policy.allow_env == ("A",)


BAD = {
    "unknown top-level key": (b'version = "0.1.0"\nextra = 1\n', "extra"),
    "unknown data key": (doc("aa_toml = 'x'\n"), "aa_toml"),
    "unknown policy key": (doc("policy = 'allow_all = true'\n"), "allow_all"),
    "unknown resource key": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                                       "path='a/b/c'\nname='n'\nmode=1'''\n"), "mode"),
    "unknown agent key": (doc("agent = 'retries = 1'\n"), "retries"),
    "bad version": (doc(version="0.2.0"), "version"),
    "bad algorithm": (doc(algorithm="md5"), "md5"),
    "non-string data": (doc("kbs_url = 1\n"), "kbs_url"),
    "bad url": (doc("kbs_url = 'ftp://x'\n"), "kbs_url"),
    "bad cert": (doc("kbs_cert = 'nope'\n"), "kbs_cert"),
    "resources without kbs": (doc("resources = '''[[resource]]\npath='a/b/c'\n"
                                        "name='n'\n'''\n"), "kbs_url"),
    "traversal in name": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                                    "path='a/b/c'\nname='../etc/passwd'\n'''\n"), "name"),
    "bad resource path": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                                    "path='a/../c'\nname='n'\n'''\n"), "path"),
    "dot-dot tag": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                        "path='a/b/..'\nname='n'\n'''\n"), "path"),
    "bad env name": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                               "path='a/b/c'\nname='n'\nenv='A-B'\n'''\n"), "env"),
    "neither file nor env": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                                       "path='a/b/c'\nname='n'\nfile=false\n'''\n"), "neither"),
    "duplicate name": (doc("kbs_url='http://k'\nresources = '''[[resource]]\n"
                                 "path='a/b/c'\nname='n'\n[[resource]]\npath='a/b/d'\n"
                                 "name='n'\n'''\n"), "duplicate"),
    "allow_args not lists": (doc("policy = 'allow_args = [\"*\"]'\n"), "allow_args"),
    "allow_exec not bool": (doc("policy = 'allow_exec = 1'\n"), "allow_exec"),
    "negative retries": (doc("agent = 'kbs_retries = -1'\n"), "kbs_retries"),
    "timeout not a number": (doc("agent = 'kbs_timeout = \"5\"'\n"), "kbs_timeout"),
    "unknown tee key curve": (doc("agent = 'tee_key = \"P-384\"'\n"), "tee_key"),
    "tee key not a string": (doc("agent = 'tee_key = 1'\n"), "tee_key"),
    "not toml": (b"version = ", "TOML"),
    "not utf-8": (b'version = "\xff"', "UTF-8"),
    "embedded not toml": (doc("policy = '[[['\n"), "policy"),
    "embedded json list": (doc("policy = '{\"allow_env\": 1}'\n"), "allow_env"),
    "too large": (b"#" * (MAX_INIT_DATA_BYTES + 1), "exceeds"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_refused_with_a_message_naming_the_problem(name: str) -> None:
    raw, needle = BAD[name]
    with pytest.raises(InitDataError) as e:
        InitData.parse(raw)
    assert needle in str(e.value)
    assert isinstance(e.value, InvalidInput)


def test_annotation_plain_and_gzip() -> None:
    assert decode_annotation(base64.b64encode(FULL).decode()) == FULL
    assert decode_annotation(base64.b64encode(gzip.compress(FULL)).decode()) == FULL


@pytest.mark.parametrize("value,needle", [
    ("not base64!", "base64"),
    (base64.b64encode(b"\x1f\x8bgarbage").decode(), "gzip"),
    (base64.b64encode(gzip.compress(b"x" * (MAX_INIT_DATA_BYTES + 10))).decode(), "larger"),
    (base64.b64encode(gzip.compress(FULL)[:-12]).decode(), "truncated"),
])
def test_annotation_refusals(value: str, needle: str) -> None:
    with pytest.raises(InitDataError) as e:
        decode_annotation(value)
    assert needle in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_parse_raises_only_init_data_errors(raw: bytes) -> None:
    try:
        InitData.parse(raw)
    except InitDataError:
        pass


toml_scalar = st.one_of(st.text(max_size=20), st.integers(), st.booleans(),
                        st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kbs_url", "kbs_cert", "resources", "policy", "agent",
                                        "other"]),
                       st.one_of(st.text(max_size=60),
                                 st.sampled_from(["[[resource]]\npath='a/b/c'\nname='n'",
                                                  "allow_args=[['*']]", "kbs_retries=2",
                                                  "http://k", "{}", "{\"resource\": 1}"])),
                       max_size=5),
       st.sampled_from(["sha256", "sha384", "sha512", "sha1", ""]))
def test_fuzz_structured_documents(data: dict[str, str], algorithm: str) -> None:
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    raw = doc(body, algorithm=algorithm or None)
    try:
        init = InitData.parse(raw)
    except InitDataError:
        return
    assert init.raw == raw
    assert len(init_data_hash(init.raw)) == 48


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_annotation(value: str) -> None:
    try:
        decode_annotation(value)
    except InitDataError:
        pass


# -- names checked without ``re``: the same answers as the patterns they replaced -----------
_RESOURCE_PATH = r"(?:(?!\.\.?/)[A-Za-z0-9_.-]+/){2}(?!\.\.?$)[A-Za-z0-9_.-]+"
_FILE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAMEISH = st.text(alphabet="aZ09_.-/ \n\u00e9\u0661", max_size=12) | st.sampled_from(
    ["a/b/c", "./b/c", "a/../c", "a/b/..", "a/b/.", "..a/b/c", "a/b/c/", "a//c", "_x", "9x",
     "x" * 255, "x" * 256, ".a", "-", "A_1"])


def _resource_doc(**fields: object) -> bytes:
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    return (f'version = "0.1.0"\n[data]\nkbs_url = "http://kbs"\n'
            f"resources = '''\n[[resource]]\n{body}'''\n").encode()


@settings(max_examples=400, deadline=None)
@given(_NAMEISH)
def test_resource_path_check_equals_the_pattern(text: str) -> None:
    import re

    from arca.wire.initdata import is_resource_path

    assert is_resource_path(text) == bool(re.fullmatch(_RESOURCE_PATH, text, re.ASCII))


@settings(max_examples=300, deadline=None)
@given(_NAMEISH, st.sampled_from(["name", "env"]))
def test_file_and_env_name_checks_equal_the_patterns(text: str, which: str) -> None:
    import re

    fields = {"path": "r/t/k", "name": text} if which == "name" else \
        {"path": "r/t/k", "name": "n", "env": text}
    pattern = _FILE_NAME if which == "name" else _ENV_NAME
    try:
        InitData.parse(_resource_doc(**fields))
        accepted = True
    except InvalidInput as e:
        assert which in str(e)
        accepted = False
    assert accepted == bool(re.fullmatch(pattern, text, re.ASCII))


@pytest.mark.parametrize(("agent", "curve"), [
    ("", "X25519"), ("agent = 'tee_key = \"X25519\"'\n", "X25519"),
    ("agent = 'tee_key = \"P-256\"'\n", "P-256"),
    ("agent = '{\"tee_key\": \"P-256\", \"kbs_retries\": 1}'\n", "P-256")])
def test_tee_key_curve(agent: str, curve: str) -> None:
    assert InitData.parse(doc(agent)).agent.tee_key == curve
