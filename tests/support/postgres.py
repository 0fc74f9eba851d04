"""A throw-away PostgreSQL cluster for tests: Debian's initdb/pg_ctl run as the unprivileged
``postgres`` user in a temp directory, listening on a free loopback port; removed on exit."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from tests.support.registry import free_port


def pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return os.path.dirname(found[-1])


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yield a ``postgresql://`` URL of a fresh database ``kbs``."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries or the postgres user are missing")
    pw = pwd.getpwnam("postgres")
    root = tempfile.mkdtemp(prefix="arca-pg-", dir="/tmp")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = os.path.join(root, "data"), free_port()

    def as_pg(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    try:
        as_pg(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--no-instructions")
        as_pg(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
              f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200",
              "start")
        as_pg(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "kbs")
        yield f"postgresql://postgres@127.0.0.1:{port}/kbs"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data,
                        "-m", "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def reset_kbs_schema(url: str) -> None:
    """Drop the KBS tables so a test starts from an empty database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as c:
        for table in ("kbs_resources", "kbs_policies", "kbs_reference_values", "kbs_settings",
                      "kbs_sessions"):
            c.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()
