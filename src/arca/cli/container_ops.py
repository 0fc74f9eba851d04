"""The bodies of ``arca run|ps|logs|stop|rm|exec|inspect``, free of any CLI framework.

Both front ends call these: the typer commands of :mod:`arca.cli.container_cmd` (help, unusual
argument forms) and the lean parser of :mod:`arca.cli.fastpath` (the common forms, without
importing typer, rich or pydantic: ~0.2 s of every ``arca run``). Each returns the exit code;
errors are :class:`~arca.wire.errors.ArcaError` for ``arca.cli.main`` to print.
"""

from __future__ import annotations

import sys

# Imported by every `arca run`: annotations only (pathlib costs ~3 ms).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from arca.host.images.registry import Credentials


def _echo(text: str) -> None:
    print(text, flush=True)


def run(image: str, command: list[str] | None, detach: bool, name: str | None, rm: bool,
        env: list[str] | None, volume: list[str] | None, tee: str, kbs: str | None,
        init_data: Path | None, pull: str = "missing", creds: str | None = None,
        insecure: bool = False, ca_cert: Path | None = None, quiet: bool = False,
        tty: bool = False, interactive: bool = False, network: str = "private",
        publish: list[str] | None = None, entrypoint: str | None = None,
        user: str | None = None, workdir: str | None = None, env_file: list[str] | None = None,
        label: list[str] | None = None, read_only: bool = False, memory: str | None = None,
        cpus: str | None = None, restart: str = "no") -> int:
    from arca.host.containers.engine import Engine, PullSettings, RunOptions
    from arca.wire.errors import ConfigError

    labels = None
    if env_file or label or any("=" not in e for e in env or ()):
        from arca.host.containers import runflags

        env = runflags.resolve_env(list(env or []), list(env_file or []))
        labels = runflags.parse_labels(list(label or []))

    raw = None
    if init_data is not None:
        from arca.cli._common import read_init_data

        raw = read_init_data(init_data)
    from arca.host import backends

    if tee != "none" and not backends.available(tee):
        raise ConfigError(f"--tee {tee!r}: arca run supports "
                          f"{', '.join(backends.names())} and none")
    if tee != "none":
        # The backend's own host check (the one arca-runtime create runs), before any pull,
        # container or state: one line naming what this host lacks.
        try:
            backends.get(tee).check_host()
        except ConfigError as e:
            runnable = [n for n in backends.names() if not backends.get(n).host_problems()]
            raise ConfigError(f"--tee {tee!r}: arca run supports {', '.join(runnable)} and "
                              f"none on this host ({e})") from None
    settings = PullSettings(pull, insecure=insecure,
                            ca_file=str(ca_cert) if ca_cert is not None else None,
                            credentials=lambda ref: _credentials(creds, ref), quiet=quiet)
    opts = RunOptions(image=image, command=list(command or []), name=name, detach=detach,
                      auto_remove=rm, env=list(env or []), volumes=list(volume or []),
                      tee=tee, kbs_url=kbs, init_data=raw, pull=settings, tty=tty,
                      interactive=interactive, network=network,
                      publish=list(publish or []), entrypoint=entrypoint, user=user,
                      workdir=workdir, labels=labels, read_only=read_only, memory=memory,
                      cpus=cpus, restart=restart)
    rec, code = Engine().run(opts)
    if detach:
        _echo(rec.id)
        return 0
    return code or 0


def _credentials(creds: str | None, reference: str) -> Credentials | None:
    """Asked only when a run pulls: ``arca image pull``'s lookup, imported then."""
    from arca.cli._common import registry_credentials

    return registry_credentials(creds, reference)


def ps(all_: bool, as_json: bool, quiet: bool = False, format_: str | None = None,
       filter_: list[str] | None = None, last: int = -1, latest: bool = False,
       noheading: bool = False, no_trunc: bool = False) -> int:
    from arca.cli.table import supervisor_gone
    from arca.host.containers.state import ContainerStore

    store = ContainerStore()
    recs = store.list()
    if any(supervisor_gone(r) for r in recs):
        # the engine (~10 ms of imports) only when there is something to reap
        from arca.host.containers.engine import Engine

        Engine(containers=store).reap_lost()
        recs = store.list()
    if latest:
        last = 1
    # podman: --last/--latest look at every container, whatever its state
    recs = [r for r in recs if all_ or last >= 0 or r.is_alive()]
    from arca.cli import table

    if filter_:
        keep = table.ps_filter(filter_, lambda cid: table.labels(store, cid))
        recs = [r for r in recs if keep(r)]
    if last >= 0:
        recs = sorted(recs, key=lambda r: r.created, reverse=True)[:last]
    if quiet:
        if recs:
            _echo("\n".join(r.id if no_trunc else r.id[:12] for r in recs))
        return 0
    if as_json or format_ == "json":
        import json

        shape = table.ps_record_json if as_json else table.ps_podman_json
        _echo(json.dumps([shape(r, table.labels(store, r.id)) for r in recs], indent=2))
        return 0
    if format_:
        out = table.render_each(format_, [table.ps_fields(r, table.labels(store, r.id))
                                          for r in recs])
        if noheading and format_.startswith("table"):
            out = "\n".join(out.splitlines()[1:])
        if out:
            _echo(out)
        return 0
    out = table.ps_table(recs, no_trunc=no_trunc)
    if noheading:
        out = "\n".join(out.splitlines()[1:])
    if out:
        _echo(out)
    return 0


def logs(container: str, follow: bool, tail: int = -1) -> int:
    from arca.host.containers.engine import Engine

    out = sys.stdout.buffer
    for chunk in Engine().logs(container, follow=follow, tail=tail):
        out.write(chunk)
        out.flush()
    return 0


def stop(containers: list[str], time_: float) -> int:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.stop(c, time_)
        _echo(c)
    return 0


def rm(containers: list[str], force: bool) -> int:
    """podman's ``rm`` codes: every container is tried; 1 if one did not exist (with ``-f``
    that is no error at all), 2 if one is running (without ``-f``); any other error of
    Arca's stops there (125)."""
    from arca.errors import NotFound, StateError
    from arca.host.containers.engine import Engine

    eng = Engine()
    code = 0
    for c in containers:
        try:
            eng.remove(c, force=force)
        except NotFound as e:
            if not force:
                print(f"arca: error: {e}", file=sys.stderr)
                code = max(code, 1)
            continue
        except StateError as e:
            print(f"arca: error: {e}", file=sys.stderr)
            code = 2
            continue
        _echo(c)
    return code


def exec_(container: str, command: list[str], env: list[str] | None, tty: bool = False,
          interactive: bool = False) -> int:
    from arca.host.containers.engine import Engine

    return Engine().exec(container, list(command), list(env or []), tty=tty,
                         interactive=interactive)


def inspect(container: str, format_: str | None = None) -> int:
    import json

    from arca.cli import table
    from arca.host.containers.engine import Engine

    info = table.inspect_podman(Engine().inspect(container))
    if format_:
        _echo(table.render_each(format_, [info]))
        return 0
    _echo(json.dumps(info, indent=2))
    return 0


def kill(containers: list[str], signal: str = "KILL") -> int:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.kill(c, signal)
        _echo(c)
    return 0


def wait(containers: list[str]) -> int:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        _echo(str(eng.wait(c)))
    return 0


def start(containers: list[str]) -> int:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.start(c)
        _echo(c)
    return 0


def restart(containers: list[str], time_: float = 10.0) -> int:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.restart(c, time_)
        _echo(c)
    return 0


def top(container: str) -> int:
    from arca.cli.table import columns
    from arca.host.containers.engine import Engine

    procs = Engine().top(container)
    user = bool(procs) and "user" in procs[0]  # a guest's own listing (vm): its user names
    rows: list[tuple[str, ...]] = [("PID", "PPID", "UID", *(("USER",) if user else ()), "TIME",
                                    "COMMAND")]
    rows += [(str(p["pid"]), str(p["ppid"]), str(p["uid"]), *((str(p["user"]),) if user else ()),
              f"{p['cpu_s']:.2f}s", str(p["command"])) for p in procs]
    _echo(columns(rows))
    return 0


def stats(containers: list[str], no_stream: bool = False, as_json: bool = False,
          format_: str | None = None) -> int:
    """One sample of each container (``--no-stream`` is what this always does); ``--format``
    as podman's: ``json``, or a template over podman's names (``{{.ID}}``, ``{{.Name}}``,
    ``{{.MemUsage}}``, ``{{.PIDs}}``) and ``{{.CPUTime}}``."""
    from arca.cli.image_ops import size
    from arca.cli.table import columns
    from arca.host.containers.engine import Engine

    eng = Engine()
    names = containers or [r.id for r in eng.store.list() if r.is_alive()]
    samples = [eng.stats(c) for c in names]
    if as_json or format_ == "json":
        import json

        _echo(json.dumps(samples, indent=2))
        return 0
    fields = []
    for st in samples:
        mem = size(st["memory_bytes"]) if st["memory_bytes"] is not None else "-"
        lim = size(st["memory_limit_bytes"]) if st["memory_limit_bytes"] else "unlimited"
        fields.append({"ID": st["id"][:12], "Name": st["name"],
                       "CPUTime": (f"{st['cpu_seconds']:.2f}s" if st["cpu_seconds"] is not None
                                   else "-"),
                       "MemUsage": f"{mem} / {lim}",
                       "PIDs": str(st["pids"]) if st["pids"] is not None else "-"})
    if format_:
        from arca.cli.table import render_each

        out = render_each(format_, fields)
        if out:
            _echo(out)
        return 0
    rows = [("ID", "NAME", "CPU TIME", "MEM USAGE / LIMIT", "PIDS")]
    rows += [(f["ID"], f["Name"], f["CPUTime"], f["MemUsage"], f["PIDs"]) for f in fields]
    _echo(columns(rows))
    return 0


def port(container: str, private: str | None = None) -> int:
    """podman's ``port``: ``80/tcp -> 0.0.0.0:8080`` per published port, or the host side
    of one (``arca port web 80``); exit 125 when that port is not published."""
    from arca.errors import NotFound
    from arca.host.containers.network import NetworkPlan
    from arca.host.containers.state import ContainerStore

    store = ContainerStore()
    rec = store.find(container)
    maps = NetworkPlan.load(store.dir(rec.id)).publish
    if private is not None:
        want, _, proto = private.partition("/")
        maps = [m for m in maps if str(m.container_port) == want and m.proto == (proto or "tcp")]
        if not maps:
            raise NotFound(f"container {rec.name}: port {private} is not published")
        _echo("\n".join(f"{m.host_ip or '0.0.0.0'}:{m.host_port}" for m in maps))
        return 0
    if maps:
        _echo("\n".join(f"{m.container_port}/{m.proto} -> {m.host_ip or '0.0.0.0'}:"
                         f"{m.host_port}" for m in maps))
    return 0


def cp(src: str, dest: str) -> int:
    """``arca cp CONTAINER:PATH HOSTPATH|-`` and ``arca cp HOSTPATH|- CONTAINER:PATH``."""
    from arca.host.containers.copy import cp as do_cp
    from arca.host.containers.engine import Engine

    do_cp(Engine(), src, dest, sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


def attach(container: str, no_stdin: bool = False, sig_proxy: bool = True) -> int:
    """``arca attach``: the container's output from now until it exits (and our stdin to it
    if it runs with ``-d -i``); its exit code."""
    from arca.host.containers.attach import attach as do_attach
    from arca.host.containers.engine import Engine

    sys.stdout.flush()
    return do_attach(Engine(), container, sys.stdout.fileno(), sig_proxy=sig_proxy,
                     stdin=not no_stdin)
