"""What a Rego policy can read of its input, found by a lexer that gives up rather than guess.

:func:`input_paths` returns the input subtrees a policy's text can reach, or ``None`` ("all of
it") whenever it cannot *prove* that the policy reads nothing else. The proof is lexical and
deliberately narrow:

1. The whole text must be made of tokens this module knows (:data:`_TOKEN`): whitespace,
   comments, plain and raw strings, numbers, ASCII identifiers and Rego's operators. Anything
   else — a template string (``$"...{input.x}..."``, whose expressions live inside a string),
   a character Rego may give a meaning in a later version, an unterminated string — means
   ``None``.
2. The keyword ``with`` anywhere means ``None``: it rebinds ``input`` (or parts of it, or
   functions reading it) for an expression, which a path list cannot express.
3. Every identifier token ``input`` that is not a field name (preceded by ``.``) starts a
   reference; its path is the longest run of *adjacent* ``.name`` and ``["string"]`` segments
   (JSON escapes decoded as Rego decodes them). A reference with no such segment — ``input``
   passed to a function (``walk``, ``object.get``, ``json.filter``), iterated, indexed with a
   computed key (``input[k]``), imported whole, or followed by whitespace — means ``None``.
   A longer reference counts as its literal prefix: whatever the policy does beyond it (a
   variable key, an index, a builtin) stays inside that subtree.

Over-approximation is always sound: a larger subtree, or the whole input. The property test
``tests/unit/kbs/test_kbs_policy_projection.py`` compares the engine with plain evaluation of
the whole input over generated policies using every construct named above.

The same token stream decides whether results may be remembered (:func:`deterministic`): a
policy that names a builtin whose answer is not a function of (policy, data, input) — the
clock, randomness, the network — in code or as a string key is evaluated every time.
"""

from __future__ import annotations

import functools
import json
import re

#: One token: whitespace, comment, string, raw string, number, identifier, operator. A template
#: string (``$"``/``$```) matches none of them, so it ends the scan with ``None``.
_TOKEN = re.compile(r'''
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4}))*")
  | (?P<raw>`[^`]*`)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>:=|==|!=|<=|>=|[.\[\](){},;:=<>+\-*/%&|])
''', re.VERBOSE)
#: Builtins whose answer is not a function of (policy, data, input), by their last name part
#: (``time.now_ns``, ``rand.intn``, ``uuid.rfc4122``, ``http.send``, ``opa.runtime``,
#: ``net.lookup_ip_addr``, ``crypto.x509.parse_and_verify_certificates[_with_options]``,
#: ``io.jwt.decode_verify``) and their namespaces where every member is (``rand``, ``uuid``).
_NONDETERMINISTIC = frozenset({
    "now_ns", "intn", "rfc4122", "send", "runtime", "lookup_ip_addr",
    "parse_and_verify_certificates", "parse_and_verify_certificates_with_options",
    "decode_verify", "rand", "uuid"})


def _tokens(text: str) -> list[tuple[str, str, int, int]] | None:
    """(kind, text, start, end) of every token, or ``None`` at the first unknown character."""
    out = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        kind = m.lastgroup or ""
        out.append((kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def _string_value(kind: str, tok: str) -> str | None:
    if kind == "raw":
        return None  # kept as a stop: CoCo policies never index input with raw strings
    try:
        value = json.loads(tok)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=64)
def input_paths(text: str) -> tuple[tuple[str, ...], ...] | None:
    """The input subtrees a policy can read, or ``None`` when it may read all of its input
    (or when this module cannot prove otherwise)."""
    toks = _tokens(text)
    if toks is None:
        return None
    code = [t for t in toks if t[0] not in ("ws", "comment")]
    if any(kind == "ident" and tok == "with" for kind, tok, _, _ in code):
        return None
    paths: set[tuple[str, ...]] = set()
    for i, (kind, tok, _, _) in enumerate(code):
        if kind != "ident" or tok != "input" or (i > 0 and code[i - 1][1] == "."):
            continue
        path: list[str] = []
        j, last_end = i + 1, code[i][3]
        while j < len(code) and code[j][2] == last_end:  # adjacent: no space, no comment
            if code[j][1] == "." and j + 1 < len(code) and code[j + 1][0] == "ident" \
                    and code[j + 1][2] == code[j][3]:
                path.append(code[j + 1][1])
                last_end, j = code[j + 1][3], j + 2
            elif (code[j][1] == "[" and j + 2 < len(code)
                  and code[j + 1][0] in ("string", "raw") and code[j + 2][1] == "]"
                  and code[j + 1][2] == code[j][3] and code[j + 2][2] == code[j + 1][3]):
                key = _string_value(code[j + 1][0], code[j + 1][1])
                if key is None:
                    break
                path.append(key)
                last_end, j = code[j + 2][3], j + 3
            else:
                break
        if not path:
            return None
        paths.add(tuple(path))
    return tuple(sorted(paths))


@functools.lru_cache(maxsize=64)
def deterministic(text: str) -> bool:
    """Whether results of ``text`` may be reused for the same (data, input): ``False`` if it
    names a clock/random/network builtin in code or as a string, or cannot be scanned."""
    toks = _tokens(text)
    if toks is None:
        return False
    for kind, tok, _, _ in toks:
        if kind == "ident" and tok in _NONDETERMINISTIC:
            return False
        if kind in ("string", "raw") and tok[1:-1] in _NONDETERMINISTIC:  # time["now_ns"]
            return False
    return True
