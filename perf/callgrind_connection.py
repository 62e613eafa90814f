"""Instructions per 4k READ through a logged-in Connection (the iSCSI layer: framing, PDU decode, CmdSN window,
Command, Data-In with status, the counters' count; the tests' in-memory SCSI host instead of a ScsiTarget), for
trees side by side: the same figure on every run (no turns, no batching that follows the load), so it resolves a
change of 100 instructions that `perf/callgrind_per_io.py` (±1-2k at QD32) cannot.

    .venv/bin/python perf/callgrind_connection.py TREE [TREE ...]

Each tree runs `--batches` and 6 × `--batches` batches of 32 reads (one receive, one output batch, one count each)
under `valgrind --tool=callgrind`, and the difference is divided by the reads between them, so start-up, login
and making the PDUs (all of them made in both runs) cancel out. The worker's own parts (ring, reactor, SCSI
dispatch, backstore) are left out: `perf/callgrind_per_io.py` measures those.
"""
from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
from pathlib import Path

BATCH = 32
MOST = 6                    # the second run's batches, in multiples of the first's


def run(batches: int, most: int) -> None:
    """In the measured process (a tree's PYTHONPATH): `batches` batches of reads, after making `most` of them."""
    sys.path.insert(0, str(Path(__file__).parent / "micro"))
    from test_counters import logged_in, reads        # the micro benchmarks' session and PDUs

    from target.metrics.counters import WorkerCounters
    from tests.iscsi_host import IQN
    conn = logged_in()
    counters = WorkerCounters(tempfile.mkdtemp(), 0, "callgrind", [(IQN, 0)])
    streams = [reads(1 + r * BATCH) for r in range(most)][:batches]
    gc.collect()
    gc.freeze()                                         # as target/gctune.py leaves a worker
    gc.set_threshold(20_000)
    for stream in streams:
        conn.receive_data(stream)
        conn.take_output()
        counters.count(conn, conn.output_sent(), 5000)


def measure(tree: Path, batches: int) -> float:
    from callgrind_per_io import instructions
    counts = []
    with tempfile.TemporaryDirectory(prefix="ringtgt-callgrind-conn-") as tmp:
        for n in (batches, MOST * batches):
            out = Path(tmp) / f"callgrind.out.{n}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                            str(Path(__file__).resolve()), "--run", str(n), str(MOST * batches)],
                           cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                          "PYTHONDONTWRITEBYTECODE": "1"},   # else the first run's compiling
                           check=True,                                        # would not cancel out
                           capture_output=True, timeout=600)
            counts.append(instructions(out))
    return (counts[1] - counts[0]) / ((MOST - 1) * batches * BATCH)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*", type=Path, help="checkouts (their cffi extensions built)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--run", nargs=2, type=int, help=argparse.SUPPRESS)     # inside valgrind
    args = parser.parse_args(argv)
    if args.run:
        run(*args.run)
        return 0
    for tree in args.trees:
        print(f"{tree}: {measure(tree.resolve(), args.batches) / 1000:.2f}k instructions per read", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
