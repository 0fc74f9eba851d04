"""Rego policies (``regopy``): the attestation policy (claims -> EAR trust vector) and the
resource policy (token claims + resource path -> allow/deny).

Deny by default: a resource policy whose ``data.policy.allow`` is undefined or not exactly
``true`` denies; a trust claim the attestation policy leaves undefined is 0 ("no claim"); a
policy that fails to evaluate is an error, never an allow. Compiled interpreters are cached by
(policy text, data) and used under a lock because an interpreter holds per-query input state.

A policy sees only the parts of its input it names: every reference to ``input`` in its text is
a chain ``input.a["b"]...`` whose longest literal prefix is found statically
(:func:`arca.kbs.policy_input.input_paths`, a lexer that answers "all of the input" whenever it
cannot prove less: template strings, ``with``, a bare or computed ``input``, anything it does not
know), and the policy is given just those subtrees. Evaluation is deterministic unless the
policy names a builtin that is not (time, randomness, network): for the others, results are
remembered per (policy, data, projected input), so a resource policy that looks only at
``ear.status`` is evaluated once per status rather than once per session.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from importlib import resources as pkg_resources
from typing import Any

import regopy

from arca.kbs.policy_input import deterministic, input_paths
from arca.wire.errors import ArcaError, InvalidInput

#: AR4SI trustworthiness claims, in Rego-friendly spelling -> EAR spelling.
TRUST_CLAIMS = {
    "instance_identity": "instance-identity", "configuration": "configuration",
    "executables": "executables", "file_system": "file-system", "hardware": "hardware",
    "runtime_opaque": "runtime-opaque", "storage_opaque": "storage-opaque",
    "sourced_data": "sourced-data",
}
#: Largest policy accepted from the admin API.
MAX_POLICY_BYTES = 256 * 1024
_CACHE_SIZE = 16
#: Policy results remembered per engine (keyed by policy, data and the projected input).
RESULT_CACHE_SIZE = 1024
#: What regopy's in-memory input builder cannot carry faithfully: anything JSON escapes with a
#: backslash (quotes, backslashes and control characters come back unescaped in its output; NUL
#: even ends the C string), integers that may not fit int64 (19+ digits), floats (printed back
#: with six digits), NaN/Infinity; numbers are recognised after ``:``, ``,`` or ``[``, where
#: every JSON number starts. Such inputs go as a JSON term; a match inside a string only costs
#: that slower path.
_NOT_NATIVE = re.compile(r"\\|[:,\[]\s*-?(\d{19}|\d+[.eE])|NaN|Infinity")


class PolicyError(ArcaError):
    """A policy could not be compiled or evaluated."""


@functools.lru_cache(maxsize=4)
def default_policy(name: str) -> str:
    return pkg_resources.files("arca.kbs").joinpath(f"policies/{name}.rego").read_text()


def check_policy(text: str) -> None:
    """Compile ``text``; raise :class:`InvalidInput` naming the error if it is not valid Rego."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise InvalidInput(f"policy exceeds {MAX_POLICY_BYTES} bytes")
    if "package policy" not in text:
        raise InvalidInput("policy must declare 'package policy'")
    try:
        rego = regopy.Interpreter()
        rego.add_module("policy", text)
        rego.query("data.policy")
    except regopy.RegoError as e:
        raise InvalidInput(f"policy is not valid Rego: {str(e).splitlines()[0][:300]}") from None


@dataclass
class _Compiled:
    rego: regopy.Interpreter
    bundle: regopy.Bundle
    lock: threading.Lock
    paths: tuple[tuple[str, ...], ...] | None  # what the policy reads of its input
    deterministic: bool


def project(inp: dict[str, Any], paths: tuple[tuple[str, ...], ...] | None) -> dict[str, Any]:
    """``inp`` reduced to the subtrees at ``paths`` (each whole); all of it for ``None``."""
    if paths is None:
        return inp
    out: dict[str, Any] = {}
    for path in paths:
        node: Any = inp
        for key in path:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            target = out
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = node
    return out


class PolicyEngine:
    """Evaluates policies compiled once into regopy bundles (query + data baked in): ten times
    faster per query than interpreting the module again."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], _Compiled] = {}
        self._results: dict[tuple[str, str, str, str], str] = {}
        self._lock = threading.Lock()

    def _compiled(self, text: str, data_json: str, q: str) -> _Compiled:
        key = (q, text, data_json)
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                rego = regopy.Interpreter()
                try:
                    rego.add_module("policy", text)
                    rego.add_data_json(data_json)
                    bundle = rego.build(f"x = {q}", [])
                except regopy.RegoError as e:
                    raise PolicyError(f"policy does not compile: {str(e)[:300]}") from None
                if len(self._cache) >= _CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
                hit = self._cache[key] = _Compiled(
                    regopy.Interpreter(), bundle, threading.Lock(), input_paths(text),
                    deterministic(text))
            return hit

    def query(self, text: str, data: dict[str, Any] | str, inp: dict[str, Any], q: str) -> Any:
        """Evaluate ``q``; ``None`` when undefined. ``data`` may be given as its JSON text."""
        data_json = data if isinstance(data, str) else json.dumps(data, sort_keys=True)
        c = self._compiled(text, data_json, q)
        inp = project(inp, c.paths)
        inp_json = json.dumps(inp, ensure_ascii=False)
        key = (q, text, data_json, inp_json)
        raw = self._results.get(key) if c.deterministic else None
        if raw is None:
            with c.lock:
                try:
                    _set_input(c.rego, inp, inp_json)
                    out = c.rego.query_bundle(c.bundle)
                except regopy.RegoError as e:
                    raise PolicyError(f"policy evaluation failed: {str(e)[:300]}") from None
                except ValueError as e:  # regopy cannot parse its own output (control chars)
                    raise PolicyError(f"policy result is not JSON: {str(e)[:200]}") from None
            raw = str(out)
            if c.deterministic:
                with self._lock:
                    if len(self._results) >= RESULT_CACHE_SIZE:
                        self._results.pop(next(iter(self._results)))
                    self._results[key] = raw
        if raw == "undefined":
            return None
        try:
            return json.loads(raw).get("bindings", {}).get("x")
        except (ValueError, AttributeError):
            raise PolicyError(f"policy result is not JSON: {raw[:200]}") from None

    def trust_vector(self, text: str, data: dict[str, Any] | str, inp: dict[str, Any]
                     ) -> dict[str, int]:
        result = self.query(text, data, inp, "data.policy")
        result = result if isinstance(result, dict) else {}
        vector = {}
        for rego_name, ear_name in TRUST_CLAIMS.items():
            value = result.get(rego_name, 0)
            if type(value) is not int or not -128 <= value <= 127:
                raise PolicyError(f"attestation policy gave {rego_name}={value!r}, not an int8")
            vector[ear_name] = value
        return vector

    def allow(self, text: str, data: dict[str, Any] | str, inp: dict[str, Any]) -> bool:
        return self.query(text, data, inp, "data.policy.allow") is True


def _set_input(rego: regopy.Interpreter, inp: dict[str, Any], text: str | None = None) -> None:
    """Hand ``inp`` to the interpreter: built in memory (half the cost of having Rego parse a
    JSON term, which dominated a policy query) unless it holds something that path would alter,
    then as a JSON term. ``text`` is ``json.dumps(inp, ensure_ascii=False)`` if already made."""
    text = json.dumps(inp, ensure_ascii=False) if text is None else text
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: let the JSON path escape and judge them
        text = json.dumps(inp)
    else:
        if not _NOT_NATIVE.search(text):
            rego.set_input(regopy.Input(inp))
            return
    rego.set_input_term(text)


def ear_status(vector: dict[str, int]) -> str:
    """Overall EAR status: the worst tier among the claims (AR4SI section 2.3)."""
    worst = 0
    for value in vector.values():
        v = abs(value)
        tier = 3 if v >= 96 else 2 if v >= 32 else 1 if v >= 2 else 0
        worst = max(worst, tier)
    return ["none", "affirming", "warning", "contraindicated"][worst]
