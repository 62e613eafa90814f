"""What an RBD I/O costs the worker's thread: 4k random reads at QD32 through RbdBackstore on a ring, on a one-node
cluster (tests/ceph_cluster.py).

    python perf/rbd_completion.py [--ios 20000] [--rounds 1] [--set OPTION=VALUE …]

Prints the IOPS, the worker thread's CPU per I/O split into queueing (the rt_rbd_read call and its bookkeeping)
and the rest (the ring turn, the eventfd read, rt_rbd_reap and the handler: the completion), and the CPU librbd's
own threads spent per I/O (the process's CPU minus the thread's); then `rbd bench` on the same image and pattern for
the cluster's own figure. Noisy on a shared machine. `--set` also measures with client settings other than the
ones rados.py forces (e.g. `--set rbd_non_blocking_aio=true --set rbd_disable_zero_copy_writes=true`: librbd's
defaults), alternating with the forced ones in each round, each with a client of its own.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ioring import Ring  # noqa: E402
from target.backstore import rados  # noqa: E402
from target.backstore.rados import CephClient, RbdImage, prepare_image  # noqa: E402
from target.backstore.rbd import RbdBackstore  # noqa: E402
from target.reactor import Reactor  # noqa: E402
from tests.ceph_cluster import POOL, CephCluster  # noqa: E402

IMAGE_BYTES = 256 << 20
BLOCK = 4096
DEPTH = 32


def measure(store: RbdBackstore, reactor: Reactor, ios: int) -> str:
    done = 0
    queued = 0
    queue_seconds = 0.0

    def completed(view) -> None:
        nonlocal done
        assert not isinstance(view, OSError), view
        done += 1

    blocks = IMAGE_BYTES // BLOCK
    started, thread0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
    while done < ios:
        while queued < ios and queued - done < DEPTH:
            t = time.thread_time()
            store.read(random.randrange(blocks) * BLOCK, BLOCK, completed)
            queue_seconds += time.thread_time() - t
            queued += 1
        reactor.run_once(1.0)
    elapsed = time.perf_counter() - started
    thread = time.thread_time() - thread0
    process = time.process_time() - process0
    return (f"{ios / elapsed:.0f} IOPS; worker thread {thread / ios * 1e6:.1f} µs CPU per I/O: queueing "
            f"{queue_seconds / ios * 1e6:.1f}, completion and loop {(thread - queue_seconds) / ios * 1e6:.1f}; "
            f"librbd's threads {(process - thread) / ios * 1e6:.1f} µs")


def run(image: RbdImage, settings: dict[str, str], ios: int) -> str:
    """One measurement through a client of its own with `settings` over the forced ones, after a warm-up."""
    forced = dict(rados._FORCED)
    rados._FORCED.update(settings)
    try:
        with Ring(256) as ring:
            reactor = Reactor(ring)
            store = RbdBackstore(reactor, rbd=image, size=None, block_size=512)
            try:
                measure(store, reactor, ios // 10)
                return measure(store, reactor, ios)
            finally:
                store.close()
    finally:
        rados._FORCED.clear()
        rados._FORCED.update(forced)
        rados._connections.pop(image.client).close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ios", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="also measure with this client setting instead of the forced one (repeatable)")
    args = parser.parse_args()
    other = dict(item.split("=", 1) for item in args.set)
    variants = {"forced settings": {}, **({", ".join(args.set): other} if other else {})}
    with tempfile.TemporaryDirectory() as directory, CephCluster(Path(directory)) as cluster:
        image = RbdImage(POOL, "completion", CephClient(str(cluster.conf)))
        prepare_image(image, IMAGE_BYTES)
        cluster.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-total", str(IMAGE_BYTES), str(image))
        for _ in range(args.rounds):
            for label, settings in variants.items():
                print(f"{label}: {run(image, settings, args.ios)}", flush=True)
        out = cluster.rbd("bench", "--io-type", "read", "--io-pattern", "rand", "--io-size", str(BLOCK),
                          "--io-threads", str(DEPTH), "--io-total", str(args.ios * BLOCK), str(image))
        print("rbd bench:", out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
