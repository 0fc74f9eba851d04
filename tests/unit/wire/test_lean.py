"""``arca.wire.lean`` against the stdlib it stands in for: the same digests as ``hashlib``; the
same value as ``tomllib``, or its error, on generated documents built from the pieces that trip
parsers (quotes, comments, brackets, escapes, control characters, duplicate keys and tables).
And what it is for: the agent's start (with init-data) loads no ``_hashlib`` and no ``tomllib``.
"""

from __future__ import annotations

import hashlib
import pathlib
import subprocess
import sys
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.wire import lean


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["sha256", "sha384", "sha512"]), st.binary(max_size=300))
def test_digest_equals_hashlib(alg: str, data: bytes) -> None:
    assert lean.digest(alg, data) == hashlib.new(alg, data).digest()


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(KeyError):
        lean.digest("md5", b"")


def test_agent_start_loads_neither_openssl_hashlib_nor_tomllib_json_or_re() -> None:
    code = ("import sys; from arca.guest import agent; from arca.wire.initdata import InitData; "
            "i = InitData.parse(b'version = \"0.1.0\"\\n[data]\\n'); i.digest(); "
            "print(sorted({'_hashlib', 'hashlib', 'hmac', 'signal', 'tomllib', 'json', 're', "
            "'enum', 'typing', 'fnmatch', 'base64'} "
            "& set(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


Q3 = "'" * 3
KEYS = st.sampled_from(["a", "b", "data", "resource", "x-1", "k_2", "a.b", '"q"', "é", "", " a"])
SCALARS = st.sampled_from([
    '"s"', "'s'", '""', "''", '"a\\"b"', "'a\\b'", '"a#b"', "'x' # c", '"x" #', '"x"#"', "true",
    "false", "True", "0", "-0", "+0", "+1", "01", "1.5", "-0.5", "+0.0", "1.", ".5", "1e3",
    "1_000", "inf", "nan", "[]", '["a", "b"]', "{a = 1}", "1979-05-27", '"\x01"', "'a\tb'",
    '"\x7f"', f"{Q3}m{Q3}", f"{Q3}'m{Q3}", f"{Q3}m'{Q3}", f"{Q3}m{Q3}'", f"{Q3}\nx\n{Q3}",
    f"{Q3}  \nx{Q3}", f"{Q3}x{Q3}  ", f"{Q3}x{Q3} # c", f"{Q3} x\n\n  y  \n{Q3}", '"""m"""', Q3,
    "x", "-+1", "+-1", "1" * 40, "é"])
PIECES = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", KEYS, SCALARS),
    st.builds(lambda k, v: f"{k}={v}", KEYS, SCALARS),
    st.builds(lambda k: f"[{k}]", KEYS),
    st.builds(lambda k: f"[[{k}]]", KEYS),
    st.sampled_from(["", "# comment", f"  # x = {Q3}", "[data] # c", "[ data ]", "[[a]", "[a]]",
                     "]", "[", "\r", f"a = {Q3}", Q3, f"x {Q3}", "  ", "\t", "=", "\ufeff",
                     "[[]]", "#\x01", "a = 1 # c"]),
)
DOCS = st.lists(PIECES, max_size=8).map("\n".join)


@settings(max_examples=3000, deadline=None)
@given(DOCS)
def test_toml_loads_equals_tomllib(doc: str) -> None:
    try:
        want = tomllib.loads(doc)
    except tomllib.TOMLDecodeError:
        with pytest.raises(tomllib.TOMLDecodeError):
            lean.toml_loads(doc)
        return
    assert repr(lean.toml_loads(doc)) == repr(want)  # repr: the types must match too


@settings(max_examples=3000, deadline=None)
@given(DOCS)
def test_the_fast_path_never_disagrees_with_tomllib(doc: str) -> None:
    try:
        got = lean._toml_subset(doc)
    except lean._Unsupported:
        return
    assert repr(got) == repr(tomllib.loads(doc))


def test_typical_init_data_takes_the_fast_path() -> None:
    bench = (pathlib.Path(__file__).parents[3] / "bench" / "startup" / "attested.py").read_text()
    ns: dict[str, object] = {}
    exec(bench[bench.index("def init_data"):bench.index("def med_ms")], ns)  # noqa: S102
    doc = ns["init_data"]("http://127.0.0.1:1").decode()  # type: ignore[operator]
    data = lean._toml_subset(doc)
    assert data == tomllib.loads(doc)
    resources = data["data"]["resources"]
    assert lean._toml_subset(resources) == tomllib.loads(resources)
    agent = "kbs_timeout = 2.0\nkbs_retries = 3\nkbs_backoff = 0.1\n"
    assert lean._toml_subset(agent) == tomllib.loads(agent)


GOOD_SCALARS = st.sampled_from([
    '"s"', "'s'", '""', "true", "false", "0", "-0", "+1", "1.5", "-0.5", '"a#b"', "'a\tb'",
    '"é"', f"{Q3}\nx\n{Q3}", f"{Q3} x\n\n  y  \n{Q3}", f"{Q3}'m{Q3}", f"{Q3}{Q3}"])
TABLES = st.lists(st.tuples(
    st.sampled_from(["", "[t]", "[[r]]", "[u]", "[[r]]", "# c"]),
    st.dictionaries(st.sampled_from(["a", "b", "k-1", "x_2"]), GOOD_SCALARS, max_size=3)),
    max_size=4)


@settings(max_examples=1500, deadline=None)
@given(TABLES)
def test_mostly_valid_documents_agree(tables: list[tuple[str, dict[str, str]]]) -> None:
    doc = "\n".join(f"{head}\n" + "\n".join(f"{k} = {v}" for k, v in kv.items())
                    for head, kv in tables)
    test_toml_loads_equals_tomllib.hypothesis.inner_test(doc)  # type: ignore[attr-defined]


@pytest.mark.timeout(20)  # a guard against quadratic blow-up, not a benchmark (~0.1 s here)
@pytest.mark.parametrize("doc", [
    "a = '''\n" + "x\n" * 120_000,                # unterminated block, 256 KiB of lines
    "a = '''\n" + "x\n" * 120_000 + "'''\n",
    "[[r]]\nx = 1\n" * 20_000,
])
def test_large_hostile_documents_stay_linear(doc: str) -> None:
    test_toml_loads_equals_tomllib.hypothesis.inner_test(doc)  # type: ignore[attr-defined]
