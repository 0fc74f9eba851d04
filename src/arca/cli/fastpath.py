"""A lean parser for the common forms of ``arca run|ps|logs|stop|rm|exec|inspect``.

Importing typer (with rich and pydantic) and letting it coerce parameters costs ~0.2 s, several
times what starting a container costs. :func:`dispatch` parses these commands itself and calls
the same bodies (:mod:`arca.cli.container_ops`) as the typer commands. It handles only forms it
understands exactly: ``--long VALUE``, ``--long=VALUE``, ``-s VALUE``, short flags (bundled too:
``-it``) and positionals. Anything else (``--help``, an unknown option, a missing value or
argument, ``--``, a bundle with a non-flag or unknown letter, a bad number) returns None and
goes to typer, so help texts and usage errors stay typer's own. The option tables below must
match ``container_cmd`` (a test compares them with the typer commands, and their parse results
on sample command lines).
"""

from __future__ import annotations

from arca.host.backends import DEFAULT as DEFAULT_TEE

#: Set to "0" to send every command through typer (to compare both paths, or to debug).
DISABLE_ENV = "ARCA_CLI_FASTPATH"

# Every `arca run` imports this: no typing (NamedTuple), collections.abc or pathlib at run
# time (~8 ms together).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _path(value: str) -> Any:
    from pathlib import Path

    return Path(value)


class Opt:
    """An option: ``kind`` is "flag" (bool, default False), "value" (last one wins) or
    "multi" (repeatable). ``convert`` is the type typer declares (``pathlib.Path`` is
    imported only when asked for: a test compares it with the typer command)."""

    __slots__ = ("dest", "flags", "kind", "default", "_convert")

    def __init__(self, dest: str, flags: tuple[str, ...], kind: str, default: Any = None,
                 convert: Callable[[str], Any] = str) -> None:
        self.dest, self.flags, self.kind, self.default = dest, flags, kind, default
        self._convert = convert

    @property
    def convert(self) -> Callable[[str], Any]:
        if self._convert is _path:
            from pathlib import Path

            return Path
        return self._convert


class Arg:
    __slots__ = ("dest", "many", "required")

    def __init__(self, dest: str, many: bool = False, required: bool = True) -> None:
        self.dest = dest
        self.many = many  # takes all remaining positionals (click's nargs=-1)
        self.required = required


class Command:
    __slots__ = ("func", "args", "opts", "interspersed")

    def __init__(self, func: str, args: tuple[Arg, ...], opts: tuple[Opt, ...],
                 interspersed: bool = True) -> None:
        self.func = func  # name in arca.cli.container_ops
        self.args = args
        self.opts = opts
        # False: everything after the first positional is positional
        self.interspersed = interspersed


_ENV = Opt("env", ("--env", "-e"), "multi")
COMMANDS: dict[str, Command] = {
    "run": Command("run", (Arg("image"), Arg("command", many=True, required=False)), (
        Opt("detach", ("--detach", "-d"), "flag", False),
        Opt("name", ("--name",), "value"),
        Opt("rm", ("--rm",), "flag", False),
        _ENV,
        Opt("volume", ("--volume", "-v"), "multi"),
        Opt("tee", ("--tee",), "value", DEFAULT_TEE),
        Opt("kbs", ("--kbs",), "value"),
        Opt("init_data", ("--init-data",), "value", None, _path),
        Opt("pull", ("--pull",), "value", "missing"),
        Opt("creds", ("--creds",), "value"),
        Opt("insecure", ("--insecure",), "flag", False),
        Opt("ca_cert", ("--ca-cert",), "value", None, _path),
        Opt("quiet", ("--quiet", "-q"), "flag", False),
        Opt("tty", ("--tty", "-t"), "flag", False),
        Opt("interactive", ("--interactive", "-i"), "flag", False),
        Opt("network", ("--network",), "value", "private"),
        Opt("publish", ("--publish", "-p"), "multi"),
        Opt("entrypoint", ("--entrypoint",), "value"),
        Opt("user", ("--user", "-u"), "value"),
        Opt("workdir", ("--workdir", "-w"), "value"),
        Opt("env_file", ("--env-file",), "multi"),
        Opt("label", ("--label", "-l"), "multi"),
        Opt("read_only", ("--read-only",), "flag", False),
        Opt("memory", ("--memory", "-m"), "value"),
        Opt("cpus", ("--cpus",), "value"),
        Opt("restart", ("--restart",), "value", "no"),
    ), interspersed=False),
    "ps": Command("ps", (), (Opt("all_", ("--all", "-a"), "flag", False),
                             Opt("as_json", ("--json",), "flag", False),
                             Opt("quiet", ("--quiet", "-q"), "flag", False),
                             Opt("format_", ("--format",), "value"),
                             Opt("filter_", ("--filter", "-f"), "multi"),
                             Opt("last", ("--last", "-n"), "value", -1, int),
                             Opt("latest", ("--latest", "-l"), "flag", False),
                             Opt("noheading", ("--noheading",), "flag", False),
                             Opt("no_trunc", ("--no-trunc",), "flag", False))),
    "logs": Command("logs", (Arg("container"),),
                    (Opt("follow", ("--follow", "-f"), "flag", False),
                     Opt("tail", ("--tail",), "value", -1, int))),
    "stop": Command("stop", (Arg("containers", many=True),),
                    (Opt("time_", ("--time", "-t"), "value", 10.0, float),)),
    "rm": Command("rm", (Arg("containers", many=True),),
                  (Opt("force", ("--force", "-f"), "flag", False),)),
    "exec": Command("exec_", (Arg("container"), Arg("command", many=True)), (
        _ENV,
        Opt("tty", ("--tty", "-t"), "flag", False),
        Opt("interactive", ("--interactive", "-i"), "flag", False),
    ), interspersed=False),
    "inspect": Command("inspect", (Arg("container"),),
                       (Opt("format_", ("--format", "-f"), "value"),)),
    "kill": Command("kill", (Arg("containers", many=True),),
                    (Opt("signal", ("--signal", "-s"), "value", "KILL"),)),
    "wait": Command("wait", (Arg("containers", many=True),), ()),
    "start": Command("start", (Arg("containers", many=True),), ()),
    "top": Command("top", (Arg("container"),), ()),
    "port": Command("port", (Arg("container"), Arg("private", required=False)), ()),
    "stats": Command("stats", (Arg("containers", many=True, required=False),),
                     (Opt("no_stream", ("--no-stream",), "flag", False),
                      Opt("as_json", ("--json",), "flag", False),
                      Opt("format_", ("--format",), "value"))),
    "restart": Command("restart", (Arg("containers", many=True),),
                       (Opt("time_", ("--time", "-t"), "value", 10.0, float),)),
}


def parse(cmd: Command, argv: list[str]) -> dict[str, Any] | None:
    """The keyword arguments for ``cmd.func``, or None for anything left to typer."""
    by_flag = {f: o for o in cmd.opts for f in o.flags}
    values: dict[str, Any] = {o.dest: [] if o.kind == "multi" else o.default for o in cmd.opts}
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            return None
        if not a.startswith("-") or a == "-":
            pos.append(a)
            if not cmd.interspersed:
                pos += argv[i:]
                break
            continue
        if not a.startswith("--") and len(a) > 2:
            # bundled short flags (-it, -dt): each one a known flag, as click reads them;
            # anything else (-dh, -fx, -eA=1) is left to typer
            flags = [by_flag.get("-" + c) for c in a[1:]]
            if not all(f is not None and f.kind == "flag" for f in flags):
                return None
            for f in flags:
                values[f.dest] = True  # type: ignore[union-attr]
            continue
        name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        opt = by_flag.get(name)
        if opt is None:
            return None
        if opt.kind == "flag":
            if eq:
                return None
            values[opt.dest] = True
            continue
        if not eq:
            if i >= len(argv):
                return None
            val = argv[i]
            i += 1
        try:
            v = opt._convert(val)
        except ValueError:
            return None
        if opt.kind == "multi":
            values[opt.dest].append(v)
        else:
            values[opt.dest] = v
    for arg in cmd.args:
        if arg.many:
            if arg.required and not pos:
                return None
            values[arg.dest], pos = pos, []
        elif pos:
            values[arg.dest] = pos.pop(0)
        elif not arg.required:
            values[arg.dest] = None
        else:
            return None  # a missing required positional: typer's usage error
    return None if pos else values


def dispatch(argv: list[str]) -> int | None:
    """Run ``argv`` (without the program name) if it is a form handled here: its exit code;
    None when typer must handle it (nothing has happened yet then)."""
    cmd = COMMANDS.get(argv[0]) if argv else None
    if cmd is None:
        return None
    kwargs = parse(cmd, argv[1:])
    if kwargs is None:
        return None
    from arca.cli import container_ops

    func: Callable[..., int] = getattr(container_ops, cmd.func)
    return func(**kwargs)
