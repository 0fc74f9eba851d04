"""``arca run|ps|logs|stop|rm|exec|inspect``: containers without a daemon.

Each container runs in its own trust domain (``--tee sim`` by default; ``sim`` protects against
other containers, not against this host). Detached containers (``-d``) keep running after the
CLI exits, watched by a per-container monitor. Each container has its own network
namespace (``--network``, ``-p``). ``--kbs URL``
starts the container with generated init-data holding only ``kbs_url = URL``; use
``--init-data FILE`` for anything more (resources, execution policy), never both. An image not
in the store is pulled first (``--pull missing``, with ``arca image pull``'s options); ``-t``
gives the workload (or an ``exec``'d command) a terminal, ``-i`` its stdin.

The command bodies are in :mod:`arca.cli.container_ops`; :mod:`arca.cli.fastpath` parses the
common forms of these commands without typer and must accept exactly these options (a test
compares them).
"""

from __future__ import annotations

from pathlib import Path

import typer

from arca.cli import container_ops as ops
from arca.cli import params
from arca.host.backends import DEFAULT as DEFAULT_TEE


def register(app: typer.Typer) -> None:
    @app.command("run", context_settings={"allow_interspersed_args": False})
    def run(
        image: str = params.IMAGE,
        command: list[str] = typer.Argument(None, help="Command replacing the image's Cmd."),
        detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
        name: str = typer.Option(None, "--name", help="Container name."),
        rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
        env: list[str] = typer.Option(None, "--env", "-e", help="K=V environment variable."),
        volume: list[str] = typer.Option(None, "--volume", "-v", help="SRC:DST[:ro]: a host "
                                         "path (/... or ./...) or a named volume (created "
                                         "if missing; arca volume)."),
        tee: str = typer.Option(DEFAULT_TEE, "--tee", help="sim (a software TD: isolates the "
                                "container from other containers, never from this host) | "
                                "none (plain runc)."),
        kbs: str = typer.Option(None, "--kbs", help="KBS URL (generates init-data)."),
        init_data: Path = typer.Option(None, "--init-data", help="Init-data TOML file."),
        pull: str = typer.Option("missing", "--pull", help="missing (pull IMAGE if no image "
                                 "in the store matches it) | always (ask the registry every "
                                 "time; an unchanged image downloads nothing) | never. Not "
                                 "for oci:PATH."),
        creds: str = typer.Option(None, "--creds", help="USER:PASSWORD for a pull (else "
                                  "$ARCA_REGISTRY_CREDS, else ~/.docker/config.json)."),
        insecure: bool = typer.Option(False, "--insecure", help="A pull may use plain HTTP "
                                      "if the registry has no TLS (as arca image pull "
                                      "--insecure: content still verified by digest, no "
                                      "credentials after such a fallback)."),
        ca_cert: Path = typer.Option(None, "--ca-cert", help="PEM CA bundle to verify the "
                                     "registry's TLS certificate in a pull."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No pull progress (bars "
                                   "on a terminal, plain lines in a log)."),
        tty: bool = typer.Option(False, "--tty", "-t", help="Give the process a pseudo-"
                                 "terminal (its window size follows yours; with -d, arca logs "
                                 "shows its output)."),
        interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open "
                                         "for the process (else it reads /dev/null); with -t "
                                         "on a terminal, yours goes raw until it exits. With "
                                         "-d: for arca attach."),
        network: str = typer.Option("private", "--network", help="private (its own network "
                                    "namespace: outbound access, ports only with -p) | host "
                                    "(the host's network) | none (loopback only)."),
        publish: list[str] = typer.Option(None, "--publish", "-p", help="[IP:]HOST_PORT:"
                                          "CONTAINER_PORT (/tcp or /udp after it): publish a port "
                                          "of the container on the host."),
        entrypoint: str = typer.Option(None, "--entrypoint", help="In place of the image's "
                                       "Entrypoint (and its Cmd; \"\" for none)."),
        user: str = typer.Option(None, "--user", "-u", help="USER[:GROUP] (name or id) in "
                                 "place of the image's User."),
        workdir: str = typer.Option(None, "--workdir", "-w", help="Working directory in "
                                    "place of the image's."),
        env_file: list[str] = typer.Option(None, "--env-file", help="File of NAME=VALUE "
                                           "lines (or NAME: the caller's value)."),
        label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE metadata "
                                        "(arca ps --format '{{.Labels}}')."),
        read_only: bool = typer.Option(False, "--read-only", help="Read-only root filesystem "
                                       "(tmpfs on /tmp, /var/tmp and /run)."),
        memory: str = typer.Option(None, "--memory", "-m", help="Memory limit, e.g. 512m."),
        cpus: str = typer.Option(None, "--cpus", help="CPU limit, e.g. 1.5."),
        restart: str = typer.Option("no", "--restart", help="no | on-failure[:N] | always | "
                                    "unless-stopped: its monitor runs an exited -d container "
                                    "again (a TD in a new TD, measured again); never after "
                                    "arca stop."),
    ) -> None:
        """Run a container from an image, each in its own trust domain. An image not in the
        store is pulled first (--pull); pull progress goes to stderr. -e NAME takes NAME's
        value from your environment. Exits with the workload's code; 125 and below for
        Arca's own errors, 126/127 when the command cannot be run / is not found."""
        raise typer.Exit(ops.run(image, command, detach, name, rm, env, volume, tee, kbs,
                                 init_data, pull, creds, insecure, ca_cert, quiet, tty,
                                 interactive, network, publish, entrypoint, user, workdir,
                                 env_file, label, read_only, memory, cpus, restart))

    @app.command("ps")
    def ps(
        all_: bool = typer.Option(False, "--all", "-a", help="Also exited containers."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the container ids."),
        format_: str = typer.Option(None, "--format", help="Go template, as podman's: "
                                    "'{{.ID}} {{.Names}} {{.Status}}', 'table ...', 'json'."),
        filter_: list[str] = typer.Option(None, "--filter", "-f", help="KEY=VALUE, as "
                                          "podman's: id, name (a regular expression), "
                                          "status, label (KEY or KEY=VALUE), ancestor "
                                          "(image); repeated: any of one key, all keys."),
        last: int = typer.Option(-1, "--last", "-n", help="The N most recently created "
                                 "(all states)."),
        latest: bool = typer.Option(False, "--latest", "-l", help="The most recently "
                                    "created (all states)."),
        noheading: bool = typer.Option(False, "--noheading", help="No header row."),
        no_trunc: bool = typer.Option(False, "--no-trunc", help="Full ids and commands."),
    ) -> None:
        """List containers."""
        raise typer.Exit(ops.ps(all_, as_json, quiet, format_, filter_, last, latest,
                                noheading, no_trunc))

    @app.command("logs")
    def logs(
        container: str = params.CONTAINER,
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow until it exits."),
        tail: int = typer.Option(-1, "--tail", help="Only the last N lines (-1: all)."),
    ) -> None:
        """Print a container's output (stdout and stderr, interleaved): a detached one's, and
        a foreground one's unless it ran with --rm or -t (its terminal is not kept)."""
        raise typer.Exit(ops.logs(container, follow, tail))

    @app.command("stop")
    def stop(
        containers: list[str] = params.CONTAINERS,
        time_: float = params.STOP_TIME,
    ) -> None:
        """Stop running containers (SIGTERM, then SIGKILL after --time)."""
        raise typer.Exit(ops.stop(containers, time_))

    @app.command("rm")
    def rm(
        containers: list[str] = params.CONTAINERS,
        force: bool = typer.Option(False, "--force", "-f", help="Kill it first if running."),
    ) -> None:
        """Remove containers (their TD state, rootfs changes and logs)."""
        raise typer.Exit(ops.rm(containers, force))

    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_(
        container: str = params.CONTAINER,
        command: list[str] = typer.Argument(..., help="Command and arguments."),
        env: list[str] = typer.Option(None, "--env", "-e", help="K=V environment variable."),
        tty: bool = typer.Option(False, "--tty", "-t", help="Give the command a pseudo-"
                                 "terminal (its window size follows yours)."),
        interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open "
                                         "for the command (else it reads /dev/null); with -t "
                                         "on a terminal, yours goes raw until it exits."),
    ) -> None:
        """Run a command in a running container (subject to the TD's execution policy: a TD
        refuses it unless its init-data sets allow_exec). Exits with the command's code."""
        raise typer.Exit(ops.exec_(container, command, env, tty, interactive))

    @app.command("inspect")
    def inspect(
        container: str = params.CONTAINER,
        format_: str = typer.Option(None, "--format", "-f", help="Go template, as podman's: "
                                    "'{{.State}}', '{{json .Process}}'."),
    ) -> None:
        """Show a container's record as JSON."""
        raise typer.Exit(ops.inspect(container, format_))

    @app.command("kill")
    def kill(
        containers: list[str] = params.CONTAINERS,
        signal: str = typer.Option("KILL", "--signal", "-s", help="Signal name or number."),
    ) -> None:
        """Send a signal to running containers (default SIGKILL)."""
        raise typer.Exit(ops.kill(containers, signal))

    @app.command("wait")
    def wait(containers: list[str] = params.CONTAINERS) -> None:
        """Wait for containers to exit; print each one's exit code."""
        raise typer.Exit(ops.wait(containers))

    @app.command("start")
    def start(containers: list[str] = params.CONTAINERS) -> None:
        """Run exited containers again, detached (their rootfs changes kept; a TEE container
        gets a new TD, measured again)."""
        raise typer.Exit(ops.start(containers))

    @app.command("restart")
    def restart(
        containers: list[str] = params.CONTAINERS,
        time_: float = params.STOP_TIME,
    ) -> None:
        """Stop containers (as arca stop), then start them again (as arca start)."""
        raise typer.Exit(ops.restart(containers, time_))

    @app.command("top")
    def top(container: str = params.CONTAINER) -> None:
        """List a running container's processes (a vm container's: the guest's, as its
        measured policy allows: allow_exec)."""
        raise typer.Exit(ops.top(container))

    @app.command("port")
    def port(
        container: str = params.CONTAINER,
        private: str = typer.Argument(None, help="PORT or PORT/PROTO (tcp, udp) in the container."),
    ) -> None:
        """The container's published ports (-p), as podman's port."""
        raise typer.Exit(ops.port(container, private))

    @app.command("stats")
    def stats(
        containers: list[str] = typer.Argument(None, help="Container names or ids (default: "
                                               "all running)."),
        no_stream: bool = typer.Option(False, "--no-stream", help="One sample (what arca "
                                       "always prints)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        format_: str = typer.Option(None, "--format", help="'json', or a Go template as "
                                    "podman's: '{{.Name}} {{.MemUsage}} {{.PIDs}}'."),
    ) -> None:
        """CPU time, memory use and limit, and processes of running containers."""
        raise typer.Exit(ops.stats(containers, no_stream, as_json, format_))

    @app.command("cp")
    def cp(
        src: str = typer.Argument(..., help="CONTAINER:PATH, a host path, or - (a tar "
                                  "stream on stdin)."),
        dest: str = typer.Argument(..., help="CONTAINER:PATH, a host path, or - (a tar "
                                   "stream on stdout)."),
    ) -> None:
        """Copy files between a container and the host, as podman cp (directories
        recursively; a running or stopped container). Paths in the container are resolved in
        its root: its symlinks never lead to the host. Refused for a TD (--tee sim...):
        copying in would change what runs there unmeasured, out could read its secrets."""
        raise typer.Exit(ops.cp(src, dest))

    @app.command("attach")
    def attach(
        container: str = params.CONTAINER,
        no_stdin: bool = typer.Option(False, "--no-stdin", help="Do not send stdin to a "
                                      "container started with -d -i (Ctrl-P Ctrl-Q detaches "
                                      "from one with -t)."),
        sig_proxy: bool = typer.Option(True, "--sig-proxy/--no-sig-proxy", help="Pass the "
                                       "signals arca gets (Ctrl-C) on to the container."),
    ) -> None:
        """Follow a running container's output (stdout and stderr, or its terminal) from
        now until it exits, and give it your stdin if it runs with -d -i; exits with the
        container's exit code."""
        raise typer.Exit(ops.attach(container, no_stdin, sig_proxy))
