"""Run the KBS under uvicorn: HTTPS with the configured certificate, or plain HTTP only with
``insecure_http``. Several workers share state through the database (sessions included), so
any worker can serve any step of a session; the parent prepares the data directory, the
key-encryption key and the schema before forking, so workers never race on creation.
"""

from __future__ import annotations

import gc
import logging
import os
import pathlib

import uvicorn
from fastapi import FastAPI

from arca.kbs.app import create_app
from arca.kbs.config import CONFIG_ENV, KbsConfig
from arca.kbs.evidence import build_verifiers
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


#: uvicorn protocol class: httptools, with the KBS protocol steps answered from the parser.
HTTP_PROTOCOL = "arca.kbs.httpproto:KbsHttpProtocol"
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


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: the config comes from the environment."""
    cfg = KbsConfig.from_json(os.environ[CONFIG_ENV])
    _logging(cfg)
    app = create_app(cfg)
    _settle()
    return app


def serve(cfg: KbsConfig) -> None:
    _logging(cfg)
    prepare(cfg)
    host, port = cfg.host_port()
    tls = {} if cfg.insecure_http else {"ssl_certfile": cfg.tls_cert, "ssl_keyfile": cfg.tls_key}
    common = {"host": host, "port": port, "log_level": "warning", "access_log": False,
              "http": HTTP_PROTOCOL,
              "timeout_keep_alive": 30, "timeout_graceful_shutdown": 3, **tls}
    log = logging.getLogger("arca.kbs")
    if cfg.workers > 1:
        log.info("%s", startup_line(cfg, list(build_verifiers(cfg))))
        os.environ[CONFIG_ENV] = cfg.to_json()
        uvicorn.run("arca.kbs.server:app_from_env", factory=True, workers=cfg.workers,
                    **common)  # type: ignore[arg-type]
    else:
        app = create_app(cfg)
        log.info("%s", startup_line(cfg, list(app.kbs_fast_path.svc.verifiers)))
        _settle()
        uvicorn.run(app, **common)  # type: ignore[arg-type]
