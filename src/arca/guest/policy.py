"""The execution policy: which process the agent may exec, given what the host asked for
(``process.json``, untrusted): the measured descriptor's, deviating only where the measured
init-data policy allows. The rules (args, env, cwd/uid/gid) are in docs/guest.md."""

from __future__ import annotations

from fnmatch import fnmatchcase

from arca.wire.descriptor import ProcessSpec, is_orchestrator_env
from arca.wire.errors import PolicyDenied, WireFormatError
from arca.wire.initdata import ExecPolicy

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any


def host_process(obj: Any) -> ProcessSpec:
    """The fields of the host's OCI ``process`` object (``process.json``) the policy looks at."""
    if not isinstance(obj, dict):
        raise WireFormatError("process.json must be a JSON object")
    args, env, cwd = obj.get("args"), obj.get("env", []), obj.get("cwd", "/")
    user = obj.get("user", {})
    if not (isinstance(args, list) and args and all(isinstance(a, str) for a in args)):
        raise WireFormatError("process.json: args must be a non-empty list of strings")
    if not (isinstance(env, list) and all(isinstance(e, str) for e in env)):
        raise WireFormatError("process.json: env must be a list of strings")
    if not isinstance(cwd, str) or not isinstance(user, dict):
        raise WireFormatError("process.json: cwd must be a string and user an object")
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    if type(uid) is not int or type(gid) is not int:
        raise WireFormatError("process.json: user.uid and user.gid must be integers")
    return ProcessSpec(tuple(args), cwd, uid, gid, tuple(env))


def args_allowed(args: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    if patterns and patterns[-1] == "...":
        fixed = patterns[:-1]
        return len(args) >= len(fixed) and all(
            fnmatchcase(a, p) for a, p in zip(args, fixed, strict=False))
    return len(args) == len(patterns) and all(
        fnmatchcase(a, p) for a, p in zip(args, patterns, strict=True))


def check_process(host: ProcessSpec, measured: ProcessSpec, policy: ExecPolicy) -> ProcessSpec:
    """The process to exec, or :class:`PolicyDenied` naming the offending field."""
    if host.args != measured.args and not any(args_allowed(host.args, p)
                                              for p in policy.allow_args):
        diff = next((i for i, (a, b) in enumerate(zip(host.args, measured.args, strict=False))
                     if a != b), min(len(host.args), len(measured.args)))
        got = host.args[diff] if diff < len(host.args) else "<missing>"
        raise PolicyDenied(f"execution policy: argument {diff} {got!r} differs from the "
                           f"measured command {list(measured.args)!r}", field="args")
    if host.cwd != measured.cwd:
        raise PolicyDenied(f"execution policy: cwd {host.cwd!r} differs from the measured "
                           f"{measured.cwd!r}", field="cwd")
    if (host.uid, host.gid) != (measured.uid, measured.gid):
        raise PolicyDenied(f"execution policy: user {host.uid}:{host.gid} differs from the "
                           f"measured {measured.uid}:{measured.gid}", field="user")
    env = {e.split("=", 1)[0]: e for e in measured.env}
    for entry in host.env:
        name = entry.split("=", 1)[0]
        if env.get(name) == entry:
            continue
        # Orchestrator variables may add, never replace a measured value; allow_env may both.
        if (name not in env and is_orchestrator_env(entry, policy.orchestrator_env)) or any(
                fnmatchcase(name, p) for p in policy.allow_env):
            env[name] = entry
            continue
        what = "changes the measured value of" if name in env else "adds"
        raise PolicyDenied(f"execution policy: the host {what} environment variable {name!r}",
                           field="env")
    return ProcessSpec(host.args, measured.cwd, measured.uid, measured.gid,
                       tuple(env.values()))
