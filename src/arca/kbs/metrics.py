"""Prometheus text-format metrics of one KBS process (no client library needed).

Counters: attestations by TEE and result, resource releases by result; latency histograms for
both. With several worker processes each keeps its own numbers (label ``pid``), which
Prometheus sums.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attestations: dict[tuple[str, str], int] = defaultdict(int)
        self.releases: dict[str, int] = defaultdict(int)
        self.attest_latency = _Histogram()
        self.release_latency = _Histogram()

    def attestation(self, tee: str, result: str, seconds: float) -> None:
        with self._lock:
            self.attestations[(tee, result)] += 1
            self.attest_latency.observe(seconds)

    def release(self, result: str, seconds: float) -> None:
        with self._lock:
            self.releases[result] += 1
            self.release_latency.observe(seconds)

    def render(self) -> str:
        pid = os.getpid()
        out = ["# HELP arca_kbs_attestations_total Attestation requests by TEE and result.",
               "# TYPE arca_kbs_attestations_total counter"]
        with self._lock:
            for (tee, result), n in sorted(self.attestations.items()):
                out.append(f'arca_kbs_attestations_total{{pid="{pid}",tee="{tee}",'
                           f'result="{result}"}} {n}')
            out += ["# HELP arca_kbs_resource_releases_total Resource requests by result.",
                    "# TYPE arca_kbs_resource_releases_total counter"]
            for result, n in sorted(self.releases.items()):
                out.append(f'arca_kbs_resource_releases_total{{pid="{pid}",result="{result}"}} {n}')
            for name, h in (("arca_kbs_attest_seconds", self.attest_latency),
                            ("arca_kbs_release_seconds", self.release_latency)):
                out += [f"# HELP {name} Latency of the handler.", f"# TYPE {name} histogram"]
                for bound, n in zip(BUCKETS, h.counts, strict=True):
                    out.append(f'{name}_bucket{{pid="{pid}",le="{bound}"}} {n}')
                out.append(f'{name}_bucket{{pid="{pid}",le="+Inf"}} {h.total}')
                out.append(f'{name}_sum{{pid="{pid}"}} {h.sum:.6f}')
                out.append(f'{name}_count{{pid="{pid}"}} {h.total}')
        return "\n".join(out) + "\n"
