"""Warnings about init-data policies that let the host choose code or reach the TD (issue 13
item 7). ``arca policy generate`` prints them; nothing is refused: a tenant may mean it.

An execution policy is measured, so whatever it allows a hostile host may pick. Patterns are
risky when the host can choose *code* through them: a shell or interpreter with a wildcard in
its arguments (``sh -c "echo *"`` admits ``sh -c "echo x; cat /run/arca/secrets/key"``), a
wildcard after an option that takes code (``-c``, ``-e``, ``--eval``, ``-exec``), a wildcard
program name, ``"..."`` after such a program, and environment patterns that steer loaders and
interpreters (``LD_*``, ``PYTHON*``, ``BASH_ENV``, ``*``). The other widenings (exec, hooks,
shared namespaces, propagation) are named as what they are.
"""

from __future__ import annotations

from arca.wire.initdata import ExecPolicy, InitData

#: Programs whose arguments are code.
INTERPRETERS = ("sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "env", "python",
                "perl", "ruby", "node", "nodejs", "php", "lua", "awk", "gawk", "mawk", "sed",
                "tclsh", "Rscript", "java", "deno", "bun", "xargs", "nohup", "timeout",
                "nice", "su", "sudo", "chroot", "setsid", "flock", "watch", "find")
#: Options whose value is code (or a program) for common tools.
CODE_OPTIONS = ("-c", "-e", "-E", "--eval", "--command", "-exec", "-execdir", "-r", "-x")
#: Variables through which the environment chooses code.
CODE_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PATH", "BASH_ENV", "ENV",
            "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5LIB", "PERL5OPT", "RUBYOPT",
            "RUBYLIB", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
            "GCONV_PATH", "PS4", "PROMPT_COMMAND", "SHELLOPTS")


def _wild(pattern: str) -> bool:
    return pattern == "..." or any(c in pattern for c in "*?[")


def _interpreter(program: str) -> bool:
    name = program.rsplit("/", 1)[-1]
    return any(name == i or (name.startswith(i) and name[len(i):].replace(".", "").isdigit())
               for i in INTERPRETERS)


def _entry_warning(entry: tuple[str, ...]) -> str | None:
    shown = list(entry)
    if not entry or _wild(entry[0]):
        return f"allow_args entry {shown} lets the host choose the program"
    if _interpreter(entry[0]) and any(_wild(p) for p in entry[1:]):
        return (f"allow_args entry {shown} runs {entry[0]!r} with arguments the host chooses: "
                "that is code of the host's choosing (write the exact command instead)")
    for opt, value in zip(entry, entry[1:], strict=False):
        if opt in CODE_OPTIONS and _wild(value):
            return (f"allow_args entry {shown} lets the host choose the code given to {opt!r}")
    return None


def _env_warning(pattern: str) -> str | None:
    from fnmatch import fnmatchcase

    hits = [v for v in CODE_ENV if fnmatchcase(v, pattern)]
    if pattern.strip("*") == "" or hits:
        return (f"allow_env pattern {pattern!r} lets the host set {', '.join(hits) or 'any'} "
                "variable(s) that choose code the workload runs")
    return None


def warnings(policy: ExecPolicy) -> list[str]:
    out = [w for w in map(_entry_warning, policy.allow_args) if w]
    out += [w for w in map(_env_warning, (*policy.allow_env, *policy.orchestrator_env)) if w]
    if policy.allow_exec:
        out.append("allow_exec lets the host run any command in the TD (on sim, nothing stops "
                   "a hostile host anyway; on a VM TD it opens the agent to exec)")
    if policy.allow_hooks:
        out.append("allow_hooks lets the host run OCI hooks inside the TD before the agent")
    if policy.allow_namespaces:
        out.append(f"allow_namespaces {list(policy.allow_namespaces)} lets other containers "
                   "reach the TD's processes, secrets or device")
    if policy.allow_propagation:
        out.append("allow_propagation lets shared/slave mounts export the TD's secrets tmpfs")
    return out


def init_data_warnings(raw: bytes | None) -> list[str]:
    if raw is None:
        return []
    init = InitData.parse(raw)
    out = warnings(init.policy)
    if init.kbs_url is not None and init.agent.insecure_kbs:
        out.append(f"agent.insecure_kbs: the TD accepts whatever answers at {init.kbs_url} "
                   "(not authenticated)")
    return out
