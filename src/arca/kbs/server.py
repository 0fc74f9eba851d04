"""Run the KBS on Arca's HTTP server (:mod:`arca.kbs.httpserver`): HTTPS with the configured
certificate, or plain HTTP only with ``insecure_http``. Several workers share state through
the database (sessions included), so any worker can serve any step of a session; the parent
prepares the data directory, the key-encryption key and the schema, binds the listening socket
and then forks the workers, so workers never race on creation and all accept from one socket.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pathlib
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from arca.kbs.app import create_app
from arca.kbs.config import KbsConfig
from arca.kbs.evidence import build_verifiers
from arca.kbs.httpserver import BACKLOG, serve_forever
from arca.kbs.store import Store, load_kek
from arca.wire.errors import ConfigError
from arca.wire.tees import HARDWARE_TEES


def prepare(cfg: KbsConfig) -> None:
    """Check the configuration and create the data directory, KEK, schema and token key."""
    cfg.check()
    try:
        pathlib.Path(cfg.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ConfigError(f"data directory {cfg.data_dir}: {e}") from None
    store = Store(cfg.db_url, cfg.data_dir, load_kek(cfg.kek_path))
    store.close()


#: A worker that dies sooner than this after it started is not restarted (a crash loop: the
#: whole server stops with an error instead).
MIN_WORKER_LIFE = 5.0
#: Young-generation collection threshold: a session allocates a few thousand objects, nearly
#: all freed by reference counting; collecting every 700 allocations only walks them again.
GC_GEN0_THRESHOLD = 50_000


def _settle() -> None:
    """Move everything allocated at start-up (modules, app, database engines) out of the
    collector's reach, so a full collection in a worker walks only what requests allocated
    rather than stalling the event loop over the whole start-up heap; collect the young
    generation less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _logging(cfg: KbsConfig) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("arca.kbs.access").setLevel(
        logging.INFO if cfg.access_log else logging.WARNING)


def startup_line(cfg: KbsConfig, tees: list[str]) -> str:
    """Where the KBS listens, which TEEs it accepts, whether collateral is configured."""
    host, port = cfg.host_port()
    scheme = "http" if cfg.insecure_http else "https"
    hw = sorted(set(tees) & set(HARDWARE_TEES))
    sources = [f"directory {cfg.collateral}"] if cfg.collateral else []
    if cfg.collateral_online:
        sources.append("fetched from Intel PCS / AMD KDS")
    collateral = (f"collateral: {', '.join(sources)}" if sources else
                  "collateral not configured" + (f" ({'/'.join(hw)} evidence needs it)"
                                                 if hw else ""))
    return (f"arca kbs listening on {scheme}://{host}:{port}, data {cfg.data_dir}, "
            f"TEEs accepted: {', '.join(sorted(tees)) or 'none'}; {collateral}; "
            f"admin API {'on' if cfg.admin_public_key else 'off (no admin public key)'}; "
            f"{cfg.workers} worker(s)")


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e}") from None
    sock.setblocking(False)
    return sock


def _tls(cfg: KbsConfig) -> ssl.SSLContext | None:
    if cfg.insecure_http:
        return None
    assert cfg.tls_cert and cfg.tls_key  # cfg.check()
    # The default server context: TLS 1.2 minimum, the platform's secure cipher list.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"TLS certificate {cfg.tls_cert} / key {cfg.tls_key}: {e}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _run(app: Any, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    """Serve on this process's event loop (uvloop when installed) until SIGTERM/SIGINT."""
    try:
        import uvloop
        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_forever(app, sock, tls))


def _worker(cfg: KbsConfig, sock: socket.socket, tls: ssl.SSLContext | None) -> int:
    """A forked worker: its own app (database connections are never shared across a fork)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        app = create_app(cfg)
        _settle()
        _run(app, sock, tls)
        return 0
    except BaseException:  # the worker's exit status tells the parent; keep the trace
        logging.getLogger("arca.kbs").exception("worker failed")
        return 1
    finally:
        logging.shutdown()


def _supervise(cfg: KbsConfig, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
    """Fork ``cfg.workers`` workers on the shared socket, replace one that dies, and pass
    SIGTERM/SIGINT on to them (then wait for their graceful stop)."""
    log = logging.getLogger("arca.kbs")
    watched = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    # Blocked before forking, so a signal arriving meanwhile waits for sigwait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    workers: dict[int, float] = {}

    def spawn() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_worker(cfg, sock, tls))
        workers[pid] = time.monotonic()

    for _ in range(cfg.workers):
        spawn()
    stopping = False
    failed = False
    while workers:
        sig = signal.sigwait(watched)
        if sig in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            for pid in workers:
                _kill(pid, signal.SIGTERM)
        while workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                workers.clear()
                break
            if pid == 0:
                break
            born = workers.pop(pid, None)
            if born is None or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if time.monotonic() - born < MIN_WORKER_LIFE:
                log.error("worker %d exited (%d) right after starting: stopping", pid, code)
                stopping = failed = True
                for other in workers:
                    _kill(other, signal.SIGTERM)
            else:
                log.warning("worker %d exited (%d): starting another", pid, code)
                spawn()
    sock.close()
    if failed:
        raise ConfigError("KBS workers could not start (see the log above)")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def serve(cfg: KbsConfig) -> None:
    _logging(cfg)
    prepare(cfg)
    host, port = cfg.host_port()
    tls = _tls(cfg)
    log = logging.getLogger("arca.kbs")
    if cfg.workers > 1:
        log.info("%s", startup_line(cfg, list(build_verifiers(cfg))))
        sock = _listen(host, port)
        _supervise(cfg, sock, tls)
    else:
        app = create_app(cfg)
        log.info("%s", startup_line(cfg, list(app.kbs_fast_path.svc.verifiers)))
        sock = _listen(host, port)
        _settle()
        try:
            _run(app, sock, tls)
        finally:
            sock.close()
