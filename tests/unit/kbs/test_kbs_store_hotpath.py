"""The SQLite hot path of the store: plain per-thread connections and background checkpoints.

Two ``Store`` objects on one data directory stand for two worker processes: a nonce is
single-use across them, each sees the other's committed rows and resource changes at once,
rows written from several threads all land, and the session database's WAL is checkpointed
by the background thread (automatic checkpoints are off there, so nothing else would).
"""

from __future__ import annotations

import pathlib
import secrets
import threading
import time

from arca.kbs import store as store_module
from arca.kbs.store import AttestedSession, Store

KEK = secrets.token_bytes(32)


def _stores(tmp_path: pathlib.Path) -> tuple[Store, Store]:
    url = f"sqlite:///{tmp_path / 'kbs.db'}"
    return Store(url, str(tmp_path), KEK), Store(url, str(tmp_path), KEK)


def _session(sid: str, token: str = "t") -> AttestedSession:
    return AttestedSession(sid, "sim", "n" * 44, time.time() + 300, token)


def test_single_use_and_visibility_across_stores(tmp_path):
    a, b = _stores(tmp_path)
    try:
        assert a.record_attested(_session("s1", "tok"))
        assert not b.record_attested(_session("s1", "other"))  # replayed elsewhere
        assert not a.record_attested(_session("s1", "other"))
        row = b.get_attested("s1")
        assert row is not None and row.token == "tok" and row.tee == "sim"
        assert b.get_attested("nope") is None
        a.put_resource("r/k/one", b"v1")
        assert b.get_resource("r/k/one") == b"v1"
        a.put_resource("r/k/one", b"v2")
        assert b.get_resource("r/k/one") == b"v2"
        assert a.delete_resource("r/k/one")
        assert b.get_resource("r/k/one") is None
    finally:
        a.close()
        b.close()


def test_inserts_from_many_threads_each_count_once(tmp_path):
    a, b = _stores(tmp_path)
    won: list[bool] = []
    lock = threading.Lock()

    def work(store: Store) -> None:
        for i in range(50):
            ok = store.record_attested(_session(f"s{i}"))
            with lock:
                won.append(ok)

    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(won) == 50 and len(won) == 200
        assert all(a.get_attested(f"s{i}") is not None for i in range(50))
    finally:
        a.close()
        b.close()


def test_session_wal_is_checkpointed_in_the_background(tmp_path, monkeypatch):
    """Automatic checkpoints are off on the session database; without the background thread
    the WAL would grow by every batch. With it, each batch reuses the checkpointed WAL."""
    monkeypatch.setattr(store_module, "CHECKPOINT_SECONDS", 0.05)
    a = Store(f"sqlite:///{tmp_path / 'kbs.db'}", str(tmp_path), KEK)
    wal = tmp_path / "sessions.db-wal"
    try:
        hot = a._hot_sessions.get()  # type: ignore[union-attr]
        assert hot.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        sizes = []
        for batch in range(4):
            for i in range(200):
                assert a.record_attested(_session(f"b{batch}-{i}", "x" * 2000))
            sizes.append(wal.stat().st_size)
            time.sleep(0.5)  # ten checkpoint rounds
        assert sizes[0] > 200 * 2000
        assert sizes[-1] < 1.5 * sizes[0], sizes  # not 4x: the WAL was reused
    finally:
        a.close()
    assert a._checkpointer is None
