"""Where an RBD I/O's CPU goes, per thread: ringtgt and tgtd's bs_rbd (and another ringtgt checkout, --baseline)
on images of a one-node cluster (tests/ceph_cluster.py), the fio jobs of the bench's rbd suite in interleaved
rounds, each thread's CPU (utime + stime from /proc/PID/task) per I/O, threads grouped by their name; the OSD's and
the monitor's too; and for ringtgt, how many of fio's sessions each worker got.

    python perf/rbd_threads.py [--jobs seqread-128k-qd8,…] [--rounds 3] [--runtime 4] [--baseline DIR]

DIR is another checkout (its cffi extensions built) served as `baseline`, so two builds are compared with tgtd in
the same rounds (the bench's medians, IOPS ratios per round; every other round runs them in reverse order, tgtd
first: a run reads from the OSD's cache what the run before it left there); --baseline-workers N serves the
baseline with N workers (this checkout's, without --baseline). Noisy on a shared machine: run it under the bench lock.
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from bench import HERE, MIB, RINGTGT_SERVER, run_fio
from servers import CLOCK_TICKS, RingTgtServer, TgtdServer, established, socket_inodes, thread_files


def thread_ticks(pids: list[int]) -> collections.Counter:
    """{thread name: utime + stime ticks} over the threads of the processes."""
    ticks: collections.Counter = collections.Counter()
    for text in thread_files(pids, "stat"):
        fields = text.rpartition(")")[2].split()
        ticks[text[text.index("(") + 1:text.rindex(")")]] += int(fields[11]) + int(fields[12])
    return ticks


def placement(server, after: float) -> list[int]:
    """Filled `after` seconds later with the sessions each ringtgt worker holds (where SO_REUSEPORT put fio's)."""
    found: list[int] = []

    def look():
        found.extend(len(socket_inodes(pid) & established(server.port)) for pid in server.worker_pids())
    if isinstance(server, RingTgtServer):
        threading.Timer(after, look).start()
    return found


def cluster_pids(conf: Path) -> dict[str, list[int]]:
    """{"osd": […], "mon": […]}: the cluster's daemons (their command line names its ceph.conf)."""
    found: dict[str, list[int]] = {"osd": [], "mon": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(conf).encode() in argv and argv[0].endswith((b"ceph-osd", b"ceph-mon")):
            found["osd" if argv[0].endswith(b"ceph-osd") else "mon"].append(int(entry.name))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="seqread-128k-qd8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="image size in MiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout, served as `baseline`")
    parser.add_argument("--baseline-workers", type=int, help="`baseline`'s workers (default: --workers); without "
                                                             "--baseline, this checkout is the baseline")
    parser.add_argument("--server-extra", default="", help="extra [server] lines for this checkout, ;-separated")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from tests.ceph_cluster import POOL, CephCluster
    size = args.size * MIB
    jobs = args.jobs.split(",")
    baseline = args.baseline or args.baseline_workers
    names = ["ringtgt"] + (["baseline"] if baseline else []) + ["tgtd"]
    runs: dict = {job: {n: [] for n in names} for job in jobs}
    threads: dict = {job: {n: collections.defaultdict(list) for n in names} for job in jobs}
    cache = HERE.parent / ".cache"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ringtgt-rbd-threads-", dir=cache) as tmp, \
            CephCluster(Path(tmp) / "ceph") as cluster:
        for name in names:
            cluster.create_image(name, size)
            cluster.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-total", str(size), f"{POOL}/{name}")
        daemons = cluster_pids(cluster.conf)
        servers = []
        try:
            extra = RINGTGT_SERVER + "\n" + args.server_extra.replace(";", "\n")
            servers.append(RingTgtServer(Path(tmp) / "ringtgt", image=None, size=size, workers=args.workers,
                                         server_extra=extra, store=cluster.lun_keys("ringtgt")))
            if baseline:
                base = RingTgtServer(Path(tmp) / "baseline", image=None, size=size,
                                     workers=args.baseline_workers or args.workers, server_extra=RINGTGT_SERVER,
                                     store=cluster.lun_keys("baseline"),
                                     env={"PYTHONPATH": str(args.baseline)} if args.baseline else None)
                base.name = "baseline"
                servers.append(base)
            servers.append(TgtdServer(Path(tmp) / "tgtd", image=None, size=size,
                                      rbd=(f"{POOL}/tgtd", cluster.conf)))
            for r in range(args.rounds):
                for job in jobs:
                    for server in servers[::-1] if r % 2 else servers:     # every other round tgtd first
                        watched = {"target": server.pids(), **daemons}
                        before = {k: thread_ticks(p) for k, p in watched.items()}
                        sessions = placement(server, 2.0)
                        result = run_fio(job, server, args.runtime)
                        ios = result["iops"] * (args.runtime + 1)
                        for k, pids in watched.items():
                            for thread, t in (thread_ticks(pids) - before[k]).items():
                                threads[job][server.name][f"{k}:{thread}"].append(t / CLOCK_TICKS * 1e6 / ios)
                        runs[job][server.name].append(result)
                        print(f"round {r + 1} {job:18} {server.name:9} {result['iops']:7.0f} IOPS "
                              f"p50 {result['p50_us']:7.0f} us  {result['cpu_us_per_io']:6.1f} CPU us/IO  "
                              f"load {os.getloadavg()[0]:.1f}"
                              + (f"  sessions per worker {'+'.join(map(str, sessions))}" if sessions else ""),
                              flush=True)
        finally:
            for server in servers:
                server.stop()
    for job in jobs:
        print(f"\n{job}: median IOPS " + ", ".join(
            f"{n} {statistics.median(r['iops'] for r in runs[job][n]):.0f}" for n in names))
        for n in names[1:]:
            per_round = [a["iops"] / b["iops"] for a, b in zip(runs[job]["ringtgt"], runs[job][n])]
            print(f"  ringtgt/{n} per round: " + " ".join(f"{x:.2f}" for x in per_round)
                  + f" (median {statistics.median(per_round):.2f})")
        print("  CPU us per I/O by thread (median over rounds; threads under 2 us left out):")
        for n in names:
            rows = sorted(((statistics.median(v + [0.0] * (args.rounds - len(v))), t)
                           for t, v in threads[job][n].items()), reverse=True)
            print(f"  {n}: " + ", ".join(f"{t} {us:.0f}" for us, t in rows if us >= 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
