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
        tty: bool = False, interactive: bool = False) -> int:
    from arca.host.containers.engine import Engine, PullSettings, RunOptions
    from arca.wire.errors import ConfigError

    raw = None
    if init_data is not None:
        from arca.cli._common import read_init_data

        raw = read_init_data(init_data)
    from arca.host import backends

    if tee != "none" and not backends.available(tee):
        raise ConfigError(f"--tee {tee!r}: arca run supports "
                          f"{', '.join(backends.names())} and none")
    settings = PullSettings(pull, insecure=insecure,
                            ca_file=str(ca_cert) if ca_cert is not None else None,
                            credentials=lambda ref: _credentials(creds, ref), quiet=quiet)
    opts = RunOptions(image=image, command=list(command or []), name=name, detach=detach,
                      auto_remove=rm, env=list(env or []), volumes=list(volume or []),
                      tee=tee, kbs_url=kbs, init_data=raw, pull=settings, tty=tty,
                      interactive=interactive)
    rec, code = Engine().run(opts)
    if detach:
        _echo(rec.id)
        return 0
    return code or 0


def _credentials(creds: str | None, reference: str) -> Credentials | None:
    """Asked only when a run pulls: ``arca image pull``'s lookup, imported then."""
    from arca.cli._common import registry_credentials

    return registry_credentials(creds, reference)


def ps(all_: bool, as_json: bool) -> int:
    from arca.host.containers.engine import Engine

    recs = [r for r in Engine().store.list() if all_ or r.is_alive()]
    if as_json:
        import json

        _echo(json.dumps([{**r.to_json(), "state": r.display_status} for r in recs], indent=2))
        return 0
    lines = [f"{'CONTAINER ID':<14} {'NAME':<20} {'TEE':<5} {'STATUS':<14} {'IMAGE':<40} COMMAND"]
    lines += [f"{r.id[:12]:<14} {r.name:<20} {r.tee:<5} {r.display_status:<14} "
              f"{r.image[:40]:<40} {' '.join(r.args)[:40]}" for r in recs]
    _echo("\n".join(lines))
    return 0


def logs(container: str, follow: bool) -> int:
    from arca.host.containers.engine import Engine

    out = sys.stdout.buffer
    for chunk in Engine().logs(container, follow=follow):
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
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.remove(c, force=force)
        _echo(c)
    return 0


def exec_(container: str, command: list[str], env: list[str] | None, tty: bool = False,
          interactive: bool = False) -> int:
    from arca.host.containers.engine import Engine

    return Engine().exec(container, list(command), list(env or []), tty=tty,
                         interactive=interactive)


def inspect(container: str) -> int:
    import json

    from arca.host.containers.engine import Engine

    _echo(json.dumps(Engine().inspect(container), indent=2))
    return 0
