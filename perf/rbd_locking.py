"""Why ringtgt serves RBD images without exclusive-lock: two clients writing one image (as two workers, or two
nodes, do), with and without the feature, on a one-node cluster (tests/ceph_cluster.py).

    python perf/rbd_locking.py [--seconds 10]

For each image kind: `rbd bench` 4k random writes at QD32 from one client alone, then from two clients at once;
prints each client's IOPS and the total. With exclusive-lock the lock moves from one client to the other
(librbd asks the holder to release it, the other acquires it), so two writers share far less than one alone
gets. Noisy on a shared machine: compare the rows of one run, not runs.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.ceph_cluster import POOL, CephCluster  # noqa: E402

IMAGE_BYTES = 1 << 30
FEATURES = {"without exclusive-lock": "layering", "with exclusive-lock": "layering,exclusive-lock"}


def bench(cluster: CephCluster, image: str, seconds: float) -> subprocess.Popen:
    total = int(seconds * 40000 * 4096)     # more than the cluster writes in `seconds`: the timeout ends it
    return subprocess.Popen(["timeout", "-s", "INT", f"{seconds}", "rbd", "-c", str(cluster.conf), "bench",
                             "--io-type", "write", "--io-pattern", "rand", "--io-size", "4K", "--io-threads", "32",
                             "--io-total", str(total), f"{POOL}/{image}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def iops(proc: subprocess.Popen, seconds: float) -> float:
    out, _ = proc.communicate(timeout=seconds + 60)
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\s", line)]
    return int(rows[-1][1]) / int(rows[-1][0]) if rows else 0.0     # the last per-second report: SEC OPS …


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, CephCluster(Path(directory)) as cluster:
        print(f"cluster started in {cluster.start_seconds:.1f} s")
        print(f"{'image':<24} {'one client':>12} {'two clients (each)':>22} {'two clients (total)':>20}")
        for label, features in FEATURES.items():
            image = features.replace(",", "-")
            cluster.rbd("create", "--size", f"{IMAGE_BYTES}B", "--image-feature", features, f"{POOL}/{image}")
            alone = iops(bench(cluster, image, args.seconds), args.seconds)
            pair = [bench(cluster, image, args.seconds) for _ in range(2)]
            each = [iops(proc, args.seconds) for proc in pair]
            print(f"{label:<24} {alone:>12.0f} {' / '.join(f'{n:.0f}' for n in each):>22} {sum(each):>20.0f}")


if __name__ == "__main__":
    main()
