"""Persistent state of the KBS through SQLAlchemy Core: SQLite (default) or PostgreSQL.

What is stored: resources (AES-256-GCM under a key-encryption key file, the path as associated
data so a row cannot be moved to another path), policies, reference values, the token signing
key (also under the KEK, so replicas sharing a database issue interchangeable tokens) and the
protocol sessions.

Durability: every admin write is one committed transaction. SQLite runs in WAL mode with
``synchronous=FULL`` so a commit is on disk before the HTTP answer. Sessions are volatile by
nature (a lost session only costs the guest a new handshake), so with SQLite they live in a
separate ``sessions.db`` with ``synchronous=NORMAL``, and with PostgreSQL their transactions use
``synchronous_commit=off``; either way the single-use nonce check stays an atomic insert.
With SQLite the per-session statements (insert and read an attested session, read a resource)
run on plain per-thread ``sqlite3`` connections in autocommit mode, the rest through
SQLAlchemy.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from arca.wire.errors import ConfigError

KEK_SIZE = 32

meta = sa.MetaData()


def _keyed(name: str, key: str, key_length: int, value: str, kind: Any) -> sa.Table:
    """A table of one required ``value`` per ``key`` (a string of at most ``key_length``)."""
    return sa.Table(name, meta, sa.Column(key, sa.String(key_length), primary_key=True),
                    sa.Column(value, kind, nullable=False))


resources = _keyed("kbs_resources", "path", 768, "blob", sa.LargeBinary)
policies = _keyed("kbs_policies", "name", 64, "body", sa.Text)
reference_values = _keyed("kbs_reference_values", "name", 256, "vals", sa.Text)
settings = _keyed("kbs_settings", "name", 64, "value", sa.LargeBinary)
session_meta = sa.MetaData()
#: Attested sessions only (see ``arca.kbs.sessions``); the primary key makes nonces single-use.
sessions = sa.Table(
    "kbs_sessions", session_meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tee", sa.String(32), nullable=False),
    sa.Column("nonce", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
)


def load_kek(path: pathlib.Path) -> bytes:
    """Read the key-encryption key, creating it (mode 0600) on first start.

    Creation writes a temporary file and hard-links it into place, so a concurrent starter
    sees either no key or the whole key, never a partial one.
    """
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEK_SIZE))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        kek = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"key-encryption key {path}: {e}") from None
    if len(kek) != KEK_SIZE:
        raise ConfigError(f"key-encryption key {path} must be exactly {KEK_SIZE} bytes")
    return kek


def _engine(url: str, *, durable: bool) -> sa.Engine:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"database URL {url!r} must be sqlite:///FILE or postgresql://...")
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                              pool_size=8, max_overflow=8)
    sync = "FULL" if durable else "NORMAL"

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, sync)

    return engine


#: How often the session database's WAL is checkpointed, off the request path.
CHECKPOINT_SECONDS = 1.0


def _sqlite_pragmas(conn: Any, sync: str) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={sync}")
    cur.execute("PRAGMA busy_timeout=30000")
    if sync == "NORMAL":
        # Session database: an automatic checkpoint would run inside whichever insert crossed
        # the threshold, fsyncs included (milliseconds on the event loop, every few thousand
        # sessions); a background thread checkpoints instead (see _Checkpointer).
        cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


class _Checkpointer:
    """Checkpoints a WAL database every :data:`CHECKPOINT_SECONDS` from its own thread and
    connection (``PASSIVE``: never waits for, nor blocks, readers and writers; the fsyncs
    happen here, with the GIL released)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kbs-wal-checkpoint",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy or transient: the next round retries
                    continue
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _ThreadConnections:
    """One plain ``sqlite3`` connection per thread, in autocommit mode, for the statements of
    the session hot path: SQLAlchemy's pool checkout, transaction and result objects cost
    several times the statement itself there. Each statement is its own transaction, so an
    insert is committed (and a read sees every committed row) exactly as through the engine."""

    def __init__(self, path: str, sync: str) -> None:
        self.path = path
        self.sync = sync
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            _sqlite_pragmas(conn, self.sync)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled once for an engine's dialect, run as driver SQL."""

    sql: str
    order: tuple[str, ...] | None  # parameter names in order (positional styles), else None

    @classmethod
    def of(cls, engine: sa.Engine, stmt: Any) -> _Prepared:
        compiled = stmt.compile(dialect=engine.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(str(compiled), order)

    def args(self, params: dict[str, Any]) -> Any:
        return params if self.order is None else tuple(params[k] for k in self.order)

    def run(self, c: sa.Connection, **params: Any) -> Any:
        return c.exec_driver_sql(self.sql, self.args(params))


@dataclass(frozen=True)
class AttestedSession:
    id: str
    tee: str
    nonce: str
    expires_at: float
    token: str


#: PostgreSQL advisory lock held while a KBS creates its tables (an arbitrary, fixed number).
SCHEMA_LOCK_KEY = 0x4152_4341_4B42_53  # "ARCAKBS"


class Store:
    def __init__(self, db_url: str, data_dir: str, kek: bytes) -> None:
        self.is_sqlite = db_url.startswith("sqlite")
        self.engine = _engine(db_url, durable=True)
        if self.is_sqlite:
            sess_url = f"sqlite:///{pathlib.Path(data_dir, 'sessions.db')}"
            self.session_engine = _engine(sess_url, durable=False)
        else:
            self.session_engine = self.engine
        self._aead = AESGCM(kek)
        self.kek = kek
        # SQLite: the hot-path statements go through plain per-thread connections.
        self._hot: _ThreadConnections | None = None
        self._hot_sessions: _ThreadConnections | None = None
        if self.is_sqlite:
            self._hot = _ThreadConnections(db_url[len("sqlite:///"):], "FULL")
            self._hot_sessions = _ThreadConnections(
                str(pathlib.Path(data_dir, "sessions.db")), "NORMAL")
        self._checkpointer: _Checkpointer | None = None
        # The per-session statements are compiled once and run as driver SQL: SQLAlchemy's
        # per-call compilation and result machinery cost three times the query on this path.
        self._insert_session = _Prepared.of(self.session_engine, sessions.insert().values(
            {c: sa.bindparam(c) for c in ("id", "tee", "nonce", "expires_at", "token")}))
        self._get_session = _Prepared.of(self.session_engine, sa.select(
            sessions.c.id, sessions.c.tee, sessions.c.nonce, sessions.c.expires_at,
            sessions.c.token).where(sessions.c.id == sa.bindparam("id")))
        self._get_resource = _Prepared.of(self.engine, sa.select(resources.c.blob).where(
            resources.c.path == sa.bindparam("path")))
        try:
            for engine, md in ((self.engine, meta), (self.session_engine, session_meta)):
                with engine.begin() as conn:
                    if engine.dialect.name == "postgresql":
                        # Replicas starting together take turns: create_all checks, then
                        # creates, and two doing so at once fail on the second CREATE TABLE.
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": SCHEMA_LOCK_KEY})
                    md.create_all(conn)
        except sa.exc.OperationalError as e:
            raise ConfigError(f"database {db_url.split('@')[-1]}: {e.orig}") from None
        if self._hot_sessions is not None:
            self._checkpointer = _Checkpointer(self._hot_sessions.path)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        for hot in (self._hot, self._hot_sessions):
            if hot is not None:
                hot.close()
        self.engine.dispose()
        self.session_engine.dispose()

    # -- secrets at rest ----------------------------------------------------------------
    def _seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, plaintext, name.encode())

    def _open(self, name: str, blob: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], name.encode())
        except InvalidTag:
            raise ConfigError(
                f"stored {name} does not decrypt: wrong key-encryption key or tampered row"
            ) from None

    def _upsert(self, table: sa.Table, key: str, keycol: str, values: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            done = c.execute(table.update().where(table.c[keycol] == key).values(**values))
            if done.rowcount == 0:
                try:
                    with c.begin_nested():
                        c.execute(table.insert().values({keycol: key, **values}))
                except sa.exc.IntegrityError:  # inserted concurrently: update instead
                    c.execute(table.update().where(table.c[keycol] == key).values(**values))

    # -- resources -------------------------------------------------------------------
    def put_resource(self, path: str, data: bytes) -> None:
        self._upsert(resources, path, "path", {"blob": self._seal("resource:" + path, data)})

    def get_resource(self, path: str) -> bytes | None:
        if self._hot is not None:
            row = self._hot.get().execute(self._get_resource.sql,
                                          self._get_resource.args({"path": path})).fetchone()
            blob = None if row is None else row[0]
        else:
            with self.engine.connect() as c:
                blob = self._get_resource.run(c, path=path).scalar()
        return None if blob is None else self._open("resource:" + path, bytes(blob))

    def delete_resource(self, path: str) -> bool:
        with self.engine.begin() as c:
            return c.execute(resources.delete().where(resources.c.path == path)).rowcount > 0

    def list_resources(self) -> list[str]:
        with self.engine.connect() as c:
            return sorted(c.execute(sa.select(resources.c.path)).scalars())

    # -- policies and reference values ------------------------------------------------------
    def put_policy(self, name: str, body: str) -> None:
        self._upsert(policies, name, "name", {"body": body})

    def get_policy(self, name: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(sa.select(policies.c.body).where(policies.c.name == name)).scalar()

    def put_reference_value(self, name: str, values: list[str]) -> None:
        self._upsert(reference_values, name, "name", {"vals": json.dumps(values)})

    def delete_reference_value(self, name: str) -> bool:
        with self.engine.begin() as c:
            q = reference_values.delete().where(reference_values.c.name == name)
            return c.execute(q).rowcount > 0

    def reference_values(self) -> dict[str, list[str]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(reference_values.c.name, reference_values.c.vals))
            return {name: json.loads(vals) for name, vals in rows}

    # -- settings (token key) ---------------------------------------------------------------
    def get_or_create_secret(self, name: str, make: Any) -> bytes:
        """The sealed setting ``name``, created by ``make()`` if absent (first writer wins)."""
        with self.engine.begin() as c:
            blob = c.execute(sa.select(settings.c.value).where(settings.c.name == name)).scalar()
            if blob is None:
                try:
                    with c.begin_nested():
                        c.execute(settings.insert().values(
                            name=name, value=self._seal("setting:" + name, make())))
                except sa.exc.IntegrityError:
                    pass
                q = sa.select(settings.c.value).where(settings.c.name == name)
                blob = c.execute(q).scalar_one()
        return self._open("setting:" + name, blob)

    # -- sessions -------------------------------------------------------------------------
    def _relax(self, c: sa.Connection) -> None:
        if not self.is_sqlite:
            c.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))

    def record_attested(self, s: AttestedSession) -> bool:
        """Insert the attested session; ``False`` if that session id was attested before."""
        params = {"id": s.id, "tee": s.tee, "nonce": s.nonce, "expires_at": s.expires_at,
                  "token": s.token}
        if self._hot_sessions is not None:
            try:  # autocommit: the insert is its own committed transaction
                self._hot_sessions.get().execute(self._insert_session.sql,
                                                 self._insert_session.args(params))
            except sqlite3.IntegrityError:
                return False
            return True
        try:
            with self.session_engine.begin() as c:
                self._relax(c)
                self._insert_session.run(c, **params)
        except sa.exc.IntegrityError:
            return False
        return True

    def get_attested(self, sid: str) -> AttestedSession | None:
        if self._hot_sessions is not None:
            row = self._hot_sessions.get().execute(self._get_session.sql,
                                                   self._get_session.args({"id": sid})).fetchone()
        else:
            with self.session_engine.connect() as c:
                row = self._get_session.run(c, id=sid).first()
        return None if row is None else AttestedSession(row[0], row[1], row[2], float(row[3]),
                                                        row[4])

    def purge_sessions(self) -> int:
        with self.session_engine.begin() as c:
            self._relax(c)
            return c.execute(sessions.delete().where(sessions.c.expires_at < time.time() - 60)
                             ).rowcount
