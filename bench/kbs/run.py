"""KBS benchmark: complete RCAR sessions (auth + attest + one resource) with sim evidence.

Starts a real ``arca kbs serve`` (uvicorn, 2 workers, SQLite, plain HTTP on 127.0.0.1) and
drives it from client processes over raw-socket HTTP/1.1 keep-alive connections (pre-built
requests, the constant parts of the evidence prepared once); each session still makes a fresh
P-256 key, signs fresh sim evidence over the nonce-bound report data and decrypts the JWE, as
a guest does. Prints sessions/s and p50/p99 session latency at concurrency 1, 16 and 64, the
server's and the clients' CPU time per session (user + system, ``/proc`` and ``getrusage``:
the metric to compare while other work shares the machine) and, as the baseline measured in
the same run, the cost of the sim verification alone (and of the attestation policy) in one
process. Clients and server share the machine's cores, so the sessions/s figure is a lower
bound of the server's capacity.

Usage: python bench/kbs/run.py [--seconds S] [--workers N] [--levels 1,16,64] [--repeat N]
       [--client-procs N] [--fresh-connections]
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import multiprocessing as mp
import os
import pathlib
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from tests.support.kbs import MEASUREMENT, SimAuthority, admin_keypair, running_kbs  # noqa: E402

from arca.guest import jwe  # noqa: E402
from arca.host.simtee.platform import report_json  # noqa: E402
from arca.kbs.tokens import make_admin_token  # noqa: E402
from arca.wire import kbs_protocol as proto  # noqa: E402
from arca.wire.jcs import canonicalize  # noqa: E402
from arca.wire.simreport import SimReport  # noqa: E402


class LeanSim:
    """Mints the same sim evidence as ``SimAuthority.evidence`` with the constant parts (the
    PEM chain, the report template, the JSON around them) prepared once, so the load generator
    spends its CPU on what a guest really does per session: one report signature over the
    nonce-bound report data."""

    _MARK = "f" * 128  # stands for the report data's hex in the prepared report

    def __init__(self, sim: SimAuthority) -> None:
        self.key = sim.platform_key
        self.chain = json.loads(sim.evidence(bytes(64)))["cert_chain"]
        self.template = report_json(SimReport(
            measurement=MEASUREMENT, init_data_hash=bytes(48), report_data=bytes(64),
            td_id="td-1", platform_id="plat-1", debug=False))
        report = canonicalize({**self.template, "report_data": self._MARK})
        self._report = report.split(self._MARK.encode())
        assert len(self._report) == 2
        self._chain_json = json.dumps(self.chain)

    def report(self, report_data: bytes) -> bytes:
        """The canonical report bytes, as ``canonicalize`` gives them for this report data."""
        return report_data.hex().encode().join(self._report)

    def primary_evidence(self, report_data: bytes) -> dict[str, object]:
        raw = self.report(report_data)
        sig = self.key.sign(raw, ec.ECDSA(hashes.SHA384()))
        return {"report": base64.b64encode(raw).decode(),
                "signature": base64.b64encode(sig).decode(), "cert_chain": self.chain}

    def attest_body(self, runtime_data: dict[str, object]) -> bytes:
        """``json.dumps(Attestation(runtime_data, primary_evidence).to_json())``, assembled
        around the prepared chain instead of re-encoding it per session."""
        raw = self.report(proto.report_data(runtime_data, "sim"))
        sig = self.key.sign(raw, ec.ECDSA(hashes.SHA384()))
        return (f'{{"runtime-data": {json.dumps(runtime_data)}, "tee-evidence": '
                f'{{"primary_evidence": {{"report": "{base64.b64encode(raw).decode()}", '
                f'"signature": "{base64.b64encode(sig).decode()}", '
                f'"cert_chain": {self._chain_json}}}, "additional_evidence": ""}}}}').encode()


AUTH_BODY = json.dumps(proto.Request("sim").to_json())


class RawConnection:
    """A keep-alive HTTP/1.1 connection over a plain socket: pre-built requests, answers
    split by ``Content-Length`` (what the KBS sends). ``http.client`` parses every header
    block with ``email.parser`` and cost the load generator more than all its crypto."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, request: bytes) -> tuple[int, bytes, bytes]:
        """Send ``request``; the answer's status, header block and body."""
        self.sock.sendall(request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head, buf = buf[:end + 2], buf[end + 4:]
        at = head.lower().find(b"\r\ncontent-length:")
        assert at >= 0, head
        length = int(head[at + 17:head.index(b"\r\n", at + 2)])
        while len(buf) < length:
            buf += self._recv()
        self.buf = buf[length:]
        return int(head[9:12]), head, buf[:length]

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data


AUTH_REQUEST = (f"POST /kbs/v0/auth HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(AUTH_BODY)}\r\n\r\n"
                f"{AUTH_BODY}").encode()
RESOURCE_PATH = "/kbs/v0/resource/bench/key/one"


def session(conn: RawConnection, sim: LeanSim) -> None:
    status, head, body = conn.call(AUTH_REQUEST)
    assert status == 200, body
    challenge = json.loads(body)
    at = head.lower().index(b"\r\nset-cookie: ") + 14
    cookie = head[at:head.index(b";", at)]
    key = jwe.generate_key()  # as an Arca guest does (X25519)
    rd = {"nonce": challenge["nonce"], "tee-pubkey": jwe.public_jwk(key)}
    att = sim.attest_body(rd)
    status, _, body = conn.call(
        b"POST /kbs/v0/attest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Cookie: %s\r\nContent-Length: %d\r\n\r\n%s" % (cookie, len(att), att))
    assert status == 200, body
    status, _, body = conn.call(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: %s\r\n\r\n"
                                % (RESOURCE_PATH.encode(), cookie))
    assert status == 200, body
    assert jwe.decrypt(json.loads(body), key) == b"benchmark secret"


def client_proc(port: int, threads: int, seconds: float, authority: SimAuthority,
                queue: mp.Queue, fresh: bool = False) -> None:
    sim = LeanSim(authority)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        conn = None if fresh else RawConnection(port)
        mine = []
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            if fresh:  # as a guest: one connection per session, paid for in its latency
                with RawConnection(port) as c:
                    session(c, sim)
            else:
                session(conn, sim)
            mine.append(time.perf_counter() - t0)
        if conn is not None:
            conn.sock.close()
        with lock:
            latencies.extend(mine)

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put((latencies, usage.ru_utime + usage.ru_stime))


def run_level(port: int, concurrency: int, seconds: float, sim: SimAuthority,
              server_pid: int | None = None, max_procs: int = 16, fresh: bool = False) -> dict:
    # One process per connection up to 16: client threads would queue on one GIL and add
    # their wait to the measured latency.
    procs_n = min(concurrency, max_procs)
    per = [concurrency // procs_n + (1 if i < concurrency % procs_n else 0)
           for i in range(procs_n)]
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client_proc, args=(port, n, seconds, sim, queue, fresh))
             for n in per]
    cpu0 = server_cpu_seconds(server_pid) if server_pid else 0.0
    start = time.monotonic()
    for p in procs:
        p.start()
    split: list[int] = []
    if server_pid and not fresh:
        sampler = threading.Timer(min(1.0, seconds / 2),
                                  lambda: split.extend(connections_per_process(port)))
        sampler.start()
    lat: list[float] = []
    client_cpu = 0.0
    for _ in procs:
        got, cpu_s = queue.get()
        lat += got
        client_cpu += cpu_s
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    cpu = server_cpu_seconds(server_pid) - cpu0 if server_pid else 0.0
    lat.sort()
    return {"concurrency": concurrency, "sessions": len(lat),
            "sessions_per_s": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "server_cpu_ms": 1000 * cpu / max(1, len(lat)),
            "client_cpu_ms": 1000 * client_cpu / max(1, len(lat)),
            "split": "/".join(map(str, split)) or "-"}


def connections_per_process(port: int) -> list[int]:
    """How the server's established connections are spread over its worker processes
    (keep-alive connections stay with the worker that accepted them), most loaded first."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(collections.Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn's supervisor and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by the server's live process tree."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def verification_cost(sim: SimAuthority, root: pathlib.Path) -> tuple[float, float]:
    from arca.kbs.policy import PolicyEngine, default_policy
    from arca.verifier.base import Expected
    from arca.verifier.sim import SimVerifier

    verifier = SimVerifier(trusted_roots=[root.read_bytes()])
    rd = os.urandom(64)
    ev = sim.evidence(rd)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        claims = verifier.verify(ev, expected=Expected(report_data=rd))
        times.append(time.perf_counter() - t0)
    engine = PolicyEngine()
    data = {"reference": {"sim.measurement": ["ab" * 48]}, "config": {"allow_sim": True}}
    ptimes = []
    # Every session's claims differ (report data), as they do in real sessions: no result of
    # the engine's cache can be reused.
    docs = [{**claims.to_dict(), "report_data": os.urandom(64).hex()} for _ in range(200)]
    for doc in docs:
        t0 = time.perf_counter()
        engine.trust_vector(default_policy("attestation"), data,
                            {"tee": "sim", "claims": doc, "init_data": None})
        ptimes.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, statistics.median(ptimes) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--levels", default="1,16,64", help="concurrency levels, comma-separated")
    ap.add_argument("--client-procs", type=int, default=16,
                    help="load-generator processes at most (connections spread over them)")
    ap.add_argument("--fresh-connections", action="store_true",
                    help="one TCP connection per session, as a guest opens (default: each "
                         "client connection stays open across sessions)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each level")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra 'arca kbs serve' argument (repeatable), e.g. --no-access-log")
    args = ap.parse_args()
    sim = SimAuthority()
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        (d / "root.pem").write_bytes(sim.root_pem)
        key, pub = admin_keypair(d)
        verify_ms, policy_ms = verification_cost(sim, d / "root.pem")
        print(f"baseline (one process): sim verification {verify_ms:.3f} ms, "
              f"attestation policy {policy_ms:.3f} ms per session")
        with running_kbs(d / "data", "--trust-sim-root", str(d / "root.pem"),
                         "--admin-public-key", str(pub), "--workers", str(args.workers),
                         *args.server_arg) as kbs:
            import httpx

            h = {"Authorization": f"Bearer {make_admin_token(key)}"}
            httpx.post(kbs.url + "/kbs/v0/resource/bench/key/one", content=b"benchmark secret",
                       headers=h).raise_for_status()
            httpx.post(kbs.url + "/kbs/v0/reference-values", headers=h, json={
                "name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
            port = int(kbs.url.rsplit(":", 1)[1])
            run_level(port, 4, 1.0, sim)  # warm-up
            print(f"{'conc':>5} {'sessions':>9} {'sessions/s':>11} {'p50 ms':>8} {'p99 ms':>8}"
                  f" {'x verify':>9} {'srv CPU ms':>11} {'cli CPU ms':>11}  conns/worker")
            for c in (int(x) for x in args.levels.split(",") for _ in range(args.repeat)):
                r = run_level(port, c, args.seconds, sim, kbs.proc.pid, args.client_procs,
                              args.fresh_connections)
                print(f"{c:>5} {r['sessions']:>9} {r['sessions_per_s']:>11.1f} "
                      f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                      f"{r['p50_ms'] / verify_ms:>8.1f}x {r['server_cpu_ms']:>11.2f} "
                      f"{r['client_cpu_ms']:>11.2f}  {r['split']}")
    print("goal: >= 300 sessions/s and p99 < 50 ms at concurrency 16 (2 cores, clients included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
