"""/healthz answer times of a real ``nakama up`` before and during a flood of unauthenticated
1 MiB webhook bodies (review M7: eight senders once took /healthz's p90 from 2 ms to 491 ms,
because every body was parsed on the event loop before its token was looked at).

The flood is the one ``tests/e2e/test_receiver_flood.py`` sends (eight threads in a process of
their own, so their work is not counted in the probe's times); the baseline is the same probe
against the same server just before, in the same run. Target: p90 during the flood <= 100 ms.

Run: ``python benchmarks/receiver_flood.py [--seconds 6] [--senders 8] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._harness import machine_note, percentile, running_nakama
from tests.e2e.test_receiver_flood import FLOOD, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="flood length per run")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine_note())
    rows = []
    with running_nakama("flood") as server:
        assert server.api.post("/api/v1/projects", json={"name": "alice-app"}).status_code == 201
        for run in range(args.runs):
            before = probe(server.url, seconds=2)
            flood = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FLOOD,
                    str(server.port),
                    "alice-app",
                    str(args.seconds),
                    str(args.senders),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)  # let every sender get going
            during = probe(server.url, seconds=max(args.seconds - 2, 1))
            out, _ = flood.communicate(timeout=120)
            rows.append((run + 1, before, during, out.strip()))
    print(
        f"{'run':>3} {'p50 before':>11} {'p90 before':>11} {'p50 flood':>10} "
        f"{'p90 flood':>10} {'max flood':>10} {'probes':>6}  answers to the flood"
    )
    for run, before, during, out in rows:
        b50, b90 = (percentile(before, q) * 1e3 for q in (50, 90))
        d50, d90 = (percentile(during, q) * 1e3 for q in (50, 90))
        print(
            f"{run:>3} {b50:>9.1f}ms {b90:>9.1f}ms {d50:>8.1f}ms {d90:>8.1f}ms"
            f" {max(during) * 1e3:>8.1f}ms {len(during):>6}  {out}"
        )
    worst = max(percentile(d, 90) for _, _, d, _ in rows)
    base = max(percentile(b, 90) for _, b, _, _ in rows)
    verdict = "met" if worst <= 0.1 else "MISSED"
    print(
        f"RESULT receiver_flood p90_before={base * 1e3:.1f}ms p90_flood={worst * 1e3:.1f}ms "
        f"target<=100ms {verdict}"
    )


if __name__ == "__main__":
    main()
