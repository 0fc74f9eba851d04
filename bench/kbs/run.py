"""KBS benchmark: complete RCAR sessions (auth + attest + one resource) with sim evidence.

Starts a real ``arca kbs serve`` (uvicorn, 2 workers, SQLite, plain HTTP on 127.0.0.1) and
drives it from client processes with keep-alive connections; each session makes a fresh
P-256 key, signs fresh sim evidence over the nonce-bound report data and decrypts the JWE.
Prints sessions/s and p50/p99 session latency at concurrency 1, 16 and 64, and, as the
baseline measured in the same run, the cost of the sim verification alone (and of the
attestation policy) in one process. Clients and server share the machine's cores, so the
sessions/s figure is a lower bound of the server's capacity.

Usage: python bench/kbs/run.py [--seconds S] [--workers N] [--levels 1,16,64]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from tests.support.kbs import MEASUREMENT, SimAuthority, admin_keypair, running_kbs  # noqa: E402

from arca.guest import jwe  # noqa: E402
from arca.kbs.tokens import make_admin_token  # noqa: E402
from arca.wire import kbs_protocol as proto  # noqa: E402
from arca.wire.jcs import canonicalize  # noqa: E402
from arca.wire.simreport import SimReport  # noqa: E402


class LeanSim:
    """Mints the same sim evidence as ``SimAuthority.evidence`` with the constant parts (the
    PEM chain, the report template) prepared once, so the load generator spends its CPU on
    what a guest really does per session: one report signature."""

    def __init__(self, sim: SimAuthority) -> None:
        self.key = sim.platform_key
        self.chain = json.loads(sim.evidence(bytes(64)))["cert_chain"]
        self.template = SimReport(measurement=MEASUREMENT, init_data_hash=bytes(48),
                                  report_data=bytes(64), td_id="td-1", platform_id="plat-1",
                                  debug=False).to_json()

    def primary_evidence(self, report_data: bytes) -> dict[str, object]:
        raw = canonicalize({**self.template, "report_data": report_data.hex()})
        sig = self.key.sign(raw, ec.ECDSA(hashes.SHA384()))
        return {"report": base64.b64encode(raw).decode(),
                "signature": base64.b64encode(sig).decode(), "cert_chain": self.chain}


AUTH_BODY = json.dumps(proto.Request("sim").to_json())


def session(conn: http.client.HTTPConnection, sim: LeanSim) -> None:
    conn.request("POST", "/kbs/v0/auth", AUTH_BODY, {"Content-Type": "application/json"})
    r = conn.getresponse()
    challenge = json.loads(r.read())
    assert r.status == 200, challenge
    cookie = r.getheader("set-cookie").split(";")[0]
    key = ec.generate_private_key(ec.SECP256R1())
    n = key.public_key().public_numbers()
    rd = {"nonce": challenge["nonce"], "tee-pubkey": {
        "kty": "EC", "crv": "P-256", "alg": jwe.ALG,
        "x": jwe.b64u(n.x.to_bytes(32, "big")), "y": jwe.b64u(n.y.to_bytes(32, "big"))}}
    att = proto.Attestation(rd, sim.primary_evidence(proto.report_data(rd)))
    conn.request("POST", "/kbs/v0/attest", json.dumps(att.to_json()),
                 {"Content-Type": "application/json", "Cookie": cookie})
    r = conn.getresponse()
    out = r.read()
    assert r.status == 200, out
    conn.request("GET", "/kbs/v0/resource/bench/key/one", headers={"Cookie": cookie})
    r = conn.getresponse()
    out = r.read()
    assert r.status == 200, out
    assert jwe.decrypt(json.loads(out), key) == b"benchmark secret"


def client_proc(port: int, threads: int, seconds: float, authority: SimAuthority,
                queue: mp.Queue) -> None:
    import threading

    sim = LeanSim(authority)
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            session(conn, sim)
            mine.append(time.perf_counter() - t0)
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
              server_pid: int | None = None) -> dict:
    # One process per connection up to 16: client threads would queue on one GIL and add
    # their wait to the measured latency.
    procs_n = min(concurrency, 16)
    per = [concurrency // procs_n + (1 if i < concurrency % procs_n else 0)
           for i in range(procs_n)]
    queue: mp.Queue = mp.Queue()
    procs = [mp.Process(target=client_proc, args=(port, n, seconds, sim, queue)) for n in per]
    cpu0 = server_cpu_seconds(server_pid) if server_pid else 0.0
    start = time.monotonic()
    for p in procs:
        p.start()
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
            "client_cpu_ms": 1000 * client_cpu / max(1, len(lat))}


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
    for _ in range(200):
        t0 = time.perf_counter()
        engine.trust_vector(default_policy("attestation"), data,
                            {"tee": "sim", "claims": claims.to_dict(), "init_data": None})
        ptimes.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, statistics.median(ptimes) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--levels", default="1,16,64", help="concurrency levels, comma-separated")
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
                         "--admin-public-key", str(pub), "--workers", str(args.workers)) as kbs:
            import httpx

            h = {"Authorization": f"Bearer {make_admin_token(key)}"}
            httpx.post(kbs.url + "/kbs/v0/resource/bench/key/one", content=b"benchmark secret",
                       headers=h).raise_for_status()
            httpx.post(kbs.url + "/kbs/v0/reference-values", headers=h, json={
                "name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
            port = int(kbs.url.rsplit(":", 1)[1])
            run_level(port, 4, 1.0, sim)  # warm-up
            print(f"{'conc':>5} {'sessions':>9} {'sessions/s':>11} {'p50 ms':>8} {'p99 ms':>8}"
                  f" {'x verify':>9} {'srv CPU ms':>11} {'cli CPU ms':>11}")
            for c in (int(x) for x in args.levels.split(",")):
                r = run_level(port, c, args.seconds, sim, kbs.proc.pid)
                print(f"{c:>5} {r['sessions']:>9} {r['sessions_per_s']:>11.1f} "
                      f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                      f"{r['p50_ms'] / verify_ms:>8.1f}x {r['server_cpu_ms']:>11.2f} "
                      f"{r['client_cpu_ms']:>11.2f}")
    print("goal: >= 300 sessions/s and p99 < 50 ms at concurrency 16 (2 cores, clients included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
