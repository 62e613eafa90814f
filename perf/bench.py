"""`make bench`: ringtgt against tgtd (and SPDK's iSCSI target, with --spdk), side by side on this machine, with
fio's libiscsi engine on loopback.

The targets serve equal, fully written (prefilled) file-backed LUNs. Every job of perf/jobs/ runs against
each target in turn (A B A B …) for several short rounds, so drift and noise from the rest of the machine
hit all alike; each cell is the median over the rounds. The table gives IOPS, MiB/s, p50/p99 completion
latency, the CPU microseconds each server spent per I/O (all its processes and threads, from /proc), and
the ratios ringtgt/peer (for latency and CPU the ratio is peer/ringtgt, so > 1 always means ringtgt is better).
Each round's line (and the JSON) also gives the server's wakeups per I/O: the voluntary context switches of all
its threads, how often it slept and was woken.

Suites: `file` (the main matrix, through the page cache), `direct` (the matrix on O_DIRECT file LUNs: ringtgt
`direct = true`, tgtd `--bsoflags direct`, SPDK's uring bdev; the work directory must be on a file system
that supports O_DIRECT, not tmpfs), `null` (the matrix on null backstores: protocol overhead only),
`scaling` (ringtgt with 1 and 2 workers), `memory` (RSS per ringtgt worker idle and with 64 sessions); not in the
default set: `rbd` (RBD images on a one-node Ceph cluster the bench starts, tests/ceph_cluster.py: ringtgt against
tgtd's bs_rbd, tgtd first in every other round since a run reads what the one before it left in the OSD's cache,
then `rbd bench` on the same kind of image for the cluster's own ceiling) and `kernel` (the Linux
kernel initiator in a QEMU guest against ringtgt, LIO and tgtd, perf/kernel_suite.py).
When the servers leave CPUs free (`--workers` below the CPU count, as with --spdk), the file, direct and null
suites pin tgtd to ringtgt's workers' CPUs and fio to the rest (`split_cpus`): every server gets the same cores,
and fio none of them.
`--spdk DIR` adds SPDK (DIR: an SPDK build with start.sh/stop.sh, e.g. ../shared/anchors/spdk) to the direct
and null suites, on as many cores as ringtgt has workers; it is started right before each of its runs and
stopped right after, since its reactors spin their cores even when idle, and that spinning counts as CPU spent.
The JSON written with --json feeds perf/compare.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import kernel_suite
from servers import (RingTgtServer, SpdkServer, TgtdServer, cpu_seconds, drop_cached, established, fio_url, prefill,
                     rss_bytes, socket_inodes, wakeups)

HERE = Path(__file__).resolve().parent
JOBS = ["randread-4k-qd32", "randwrite-4k-qd32", "seqread-128k-qd8", "seqwrite-128k-qd8", "randread-4k-qd1",
        "mixed-64k-70-30"]
SCALING_JOBS = ["randread-4k-qd32", "randwrite-4k-qd32"]
RBD_JOBS = {        # the fio job, and `rbd bench` with the same pattern and I/Os in flight (the jobs run two fio jobs)
    "randread-4k-qd32": ["--io-type", "read", "--io-pattern", "rand", "--io-size", "4K", "--io-threads", "64"],
    "randwrite-4k-qd32": ["--io-type", "write", "--io-pattern", "rand", "--io-size", "4K", "--io-threads", "64"],
    "seqread-128k-qd8": ["--io-type", "read", "--io-pattern", "seq", "--io-size", "128K", "--io-threads", "16"],
    "seqwrite-128k-qd8": ["--io-type", "write", "--io-pattern", "seq", "--io-size", "128K", "--io-threads", "16"],
}
# ringtgt's defaults are the conservative ones (InitialR2T=Yes, ImmediateData=No: every write waits for an
# R2T). tgtd offers ImmediateData=Yes by default, so a 4k write is one PDU. The bench runs ringtgt as a perf
# lab would: first bursts as immediate data, and unsolicited Data-Out beyond it.
RINGTGT_SERVER = "initial_r2t = false\nimmediate_data = true\nbusy_poll_us = 50"
# tgtd and SPDK offer no WRITE ATOMIC; without it ringtgt's reads at QD1 leave linked to their disk reads (file.py)
RINGTGT_FILE_LUN = "atomic_writes = false"
GIB = 1 << 30
MIB = 1 << 20
# metric -> True when higher is better
METRICS = {"iops": True, "mib_s": True, "p50_us": False, "p99_us": False, "cpu_s_per_gib": False,
           "cpu_us_per_io": False, "wakeups_per_io": False}
TITLES = {"file": "file-backed LUNs (page cache)", "direct": "file-backed LUNs, O_DIRECT",
          "null": "null backstores (protocol overhead)"}


def fio_binary() -> str:
    path = os.environ.get("RINGTGT_FIO") or str(HERE.parent / ".cache/fio/bin/fio")
    if not os.access(path, os.X_OK):
        sys.exit(f"bench: fio with the libiscsi engine not found at {path} (make fio builds it)")
    return path


def run_fio(job: str, server, runtime: int, extra: list[str] = ()) -> dict:
    """One fio run of perf/jobs/<job>.fio against `server` (serving): throughput, latency, server CPU per GiB
    and per I/O."""
    env = dict(os.environ, ISCSI_URL=fio_url(server.url), RUNTIME=str(runtime))
    pids = server.pids()
    cpu0, woken0 = cpu_seconds(pids), wakeups(pids)
    proc = subprocess.run([fio_binary(), "--output-format=json", *extra, str(HERE / "jobs" / f"{job}.fio")],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=runtime + 120)
    cpu, woken = cpu_seconds(pids) - cpu0, wakeups(pids) - woken0
    if proc.returncode:
        raise RuntimeError(f"fio {job} against {server.name} failed:\n{proc.stderr}{proc.stdout[-2000:]}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    stats = report["jobs"][0]
    parts = [stats[d] for d in ("mixed", "read", "write") if d in stats and stats[d]["total_ios"]]
    iops = sum(p["iops"] for p in parts)
    bw = sum(p["bw_bytes"] for p in parts)
    # the total bytes of the whole run incl. ramp time are not reported; CPU was sampled over the same span,
    # so scale the measured rate by runtime + ramp (1 s)
    moved = bw * (runtime + 1)
    ios = iops * (runtime + 1)
    main = max(parts, key=lambda p: p["total_ios"])
    percentiles = main["clat_ns"].get("percentile", {})
    return {"iops": iops, "mib_s": bw / MIB, "p50_us": percentiles.get("50.000000", 0) / 1000,
            "p99_us": percentiles.get("99.000000", 0) / 1000,
            "cpu_s_per_gib": cpu / (moved / GIB) if moved else 0.0, "cpu_us_per_io": cpu * 1e6 / ios if ios else 0.0,
            "wakeups_per_io": woken / ios if ios else 0.0}


def median_cells(runs: list[dict]) -> dict:
    return {metric: statistics.median(r[metric] for r in runs) for metric in METRICS}


def ratio(metric: str, ours: float, theirs: float) -> float:
    """> 1 means ours (ringtgt) is better, whichever way the metric points."""
    if METRICS[metric]:
        return ours / theirs if theirs else float("inf")
    return theirs / ours if ours else float("inf")


def side_by_side(servers, jobs: list[str], rounds: int, runtime: int, log, alternate: bool = False,
                 fio_cpus: list[int] | None = None) -> dict:
    """{job: {server name: median cells, "ratio": {metric: first/second server},
    "ratios": {peer name: {metric: first/peer}}}} from interleaved rounds; with `alternate`, every other round runs
    the servers in reverse order (where a run inherits state the one before it left: the OSD's cache); with
    `fio_cpus`, fio runs on those CPUs only."""
    extra = [f"--cpus_allowed={_cpu_list(fio_cpus)}"] if fio_cpus else []
    runs = {job: {s.name: [] for s in servers} for job in jobs}
    for r in range(rounds):
        for job in jobs:
            for server in servers[::-1] if alternate and r % 2 else servers:
                with server.serving():
                    result = run_fio(job, server, runtime, extra)
                runs[job][server.name].append(result)
                log(f"  round {r + 1}/{rounds} {job:18} {server.name:10} {result['iops']:9.0f} IOPS "
                    f"{result['mib_s']:8.1f} MiB/s  p99 {result['p99_us']:8.0f} us  "
                    f"{result['cpu_us_per_io']:7.1f} CPU us/IO {result['wakeups_per_io']:5.2f} wakeups/IO")
    table = {}
    ours, peers = servers[0].name, [s.name for s in servers[1:]]
    for job in jobs:
        cells = {name: median_cells(results) for name, results in runs[job].items()}
        cells["ratios"] = {p: {m: ratio(m, cells[ours][m], cells[p][m]) for m in METRICS} for p in peers}
        cells["ratio"] = cells["ratios"][peers[0]]
        cells["runs"] = runs[job]
        table[job] = cells
    return table


def format_table(title: str, table: dict, names: list[str]) -> str:
    """A markdown table: per server IOPS, MiB/s, p50/p99, CPU per I/O; then names[0]'s ratios to each other."""
    peers = names[1:]
    vs = (lambda p: "") if len(peers) == 1 else (lambda p: f" /{p}")
    head = ["job", *(f"{n} IOPS" for n in names), *(f"{n} MiB/s" for n in names),
            *(f"{n} p50/p99 µs" for n in names), *(f"{n} CPU µs/IO" for n in names),
            *(f"ratio IOPS{vs(p)}" for p in peers), *(f"ratio p99{vs(p)}" for p in peers),
            *(f"ratio CPU{vs(p)}" for p in peers)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for job, cells in table.items():
        row = [job, *(f"{cells[n]['iops']:.0f}" for n in names), *(f"{cells[n]['mib_s']:.1f}" for n in names),
               *(f"{cells[n]['p50_us']:.0f}/{cells[n]['p99_us']:.0f}" for n in names),
               *(f"{cells[n]['cpu_us_per_io']:.1f}" for n in names)]
        row += [f"{cells['ratios'][p][m]:.2f}" for m in ("iops", "p99_us", "cpu_us_per_io") for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def direct_capable(directory: Path) -> bool:
    """Whether files in `directory` can be opened O_DIRECT (tmpfs refuses it)."""
    probe = directory / ".odirect-probe"
    try:
        os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600))
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def memory(workdir: Path, size: int, runtime: int, log) -> dict:
    """RSS of every ringtgt worker idle, and the peak while 64 sessions (fio jobs at QD1) run."""
    server = RingTgtServer(workdir / "memory", image=None, size=size, workers=2, server_extra=RINGTGT_SERVER)
    try:
        time.sleep(0.5)
        idle = {pid: rss_bytes(pid) for pid in server.worker_pids()}
        peak = dict(idle)
        sessions = dict.fromkeys(idle, 0)
        done = threading.Event()

        def sample():
            while not done.is_set():
                for pid in peak:
                    peak[pid] = max(peak[pid], rss_bytes(pid))
                    sessions[pid] = max(sessions[pid], len(socket_inodes(pid) & established(server.port)))
                done.wait(0.1)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run_fio("sessions-64", server, runtime)
        finally:
            done.set()
            sampler.join()
    finally:
        server.stop()
    result = {"idle_mib": [v / MIB for v in idle.values()], "sessions_64_mib": [v / MIB for v in peak.values()],
              "sessions": list(sessions.values())}
    log(f"  RSS per worker: idle {', '.join(f'{v:.1f}' for v in result['idle_mib'])} MiB; with 64 sessions "
        f"{', '.join(f'{v:.1f}' for v in result['sessions_64_mib'])} MiB "
        f"(sessions per worker: {', '.join(map(str, result['sessions']))})")
    return result


def rbd_suite(workdir: Path, size: int, args, log) -> tuple[dict, str]:
    """ringtgt and tgtd's bs_rbd on two images of a one-node cluster, then `rbd bench` on a third: the table.
    Runs the jobs of --jobs that it has (all of RBD_JOBS when it has none of them)."""
    jobs = [job for job in args.jobs.split(",") if job in RBD_JOBS] or list(RBD_JOBS)
    sys.path.insert(0, str(HERE.parent))
    from tests.ceph_cluster import POOL, CephCluster
    with CephCluster(workdir / "ceph") as cluster:
        log(f"  Ceph cluster started in {cluster.start_seconds:.1f} s")
        images = {}
        for name in ("ringtgt", "tgtd", "rbd-bench"):
            images[name] = cluster.create_image(name, size)
            cluster.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-total", str(size), images[name])
        servers = []
        try:
            servers.append(RingTgtServer(workdir / "ringtgt-rbd", image=None, size=size, workers=args.workers,
                                         server_extra=RINGTGT_SERVER, store=cluster.lun_keys("ringtgt")))
            servers.append(TgtdServer(workdir / "tgtd-rbd", image=None, size=size, rbd=(f"{POOL}/tgtd", cluster.conf)))
            table = side_by_side(servers, jobs, args.rounds, args.runtime, log, alternate=True)
        finally:
            for server in servers:
                server.stop()
        ceiling = {}
        for job in jobs:
            runs = []
            for _ in range(args.rounds):
                out = cluster.rbd("bench", *RBD_JOBS[job], "--io-total", str(size // 4), images["rbd-bench"])
                runs.append(float(out.strip().splitlines()[-1].split("ops/sec:")[1].split()[0]))
            ceiling[job] = statistics.median(runs)
            log(f"  rbd bench {job:18} {ceiling[job]:9.0f} IOPS")
    for job, cells in table.items():
        cells["rbd_bench_iops"] = ceiling[job]
    text = format_table(f"RBD images on a one-node Ceph cluster, ringtgt workers={args.workers}", table,
                        ["ringtgt", "tgtd"])
    text += "\n\n| job | rbd bench IOPS | ringtgt / rbd bench |\n|---|---|---|\n" + "\n".join(
        f"| {job} | {ceiling[job]:.0f} | {table[job]['ringtgt']['iops'] / ceiling[job]:.2f} |" for job in jobs)
    return table, text


def split_cpus(workers: int) -> tuple[list[int], list[int]]:
    """The CPUs the servers of the file, direct and null suites run on (ringtgt's workers are pinned to the first
    `workers` CPUs this process may use, SPDK's reactors and, when CPUs are left, tgtd's threads to the same), and
    the rest, where fio runs: a target node serves initiators on other machines, and fio's
    threads on a server's core would take its time (a ringtgt worker that sleeps for a moment finds fio on its
    core; an SPDK reactor, spinning, never does). With no CPU to spare (workers = CPUs), nothing is pinned but
    ringtgt's workers, and fio runs where the scheduler puts it."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[:workers], cpus[workers:]


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="file,direct,null,scaling,memory",
                        help="comma-separated: file, direct, null, scaling, memory, rbd, kernel "
                             "(default: all but rbd and kernel)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names from perf/jobs/")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per job (default 3)")
    parser.add_argument("--runtime", type=int, default=4, help="seconds per fio run, after 1 s ramp (default 4)")
    parser.add_argument("--size", default=1024, type=int, help="LUN size in MiB (default 1024)")
    parser.add_argument("--workers", type=int,
                        help="ringtgt workers, and SPDK's cores (default 2; 1 with --spdk: its reactors spin their "
                             "cores, so on a small machine two would leave fio none)")
    parser.add_argument("--spdk", type=Path, metavar="DIR",
                        help="also run SPDK's iscsi_tgt in the direct and null suites (DIR has start.sh, stop.sh and "
                             "build/bin/iscsi_tgt)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path,
                        help="images and logs (default: a temporary directory in the checkout's .cache/)")
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 1 if args.spdk else 2
    suites = args.suites.split(",")
    jobs = args.jobs.split(",")
    server_cpus, fio_cpus = split_cpus(args.workers)
    size = args.size * MIB
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results = {"machine": machine(), "runtime": args.runtime, "rounds": args.rounds, "workers": args.workers,
               "server_cpus": server_cpus, "fio_cpus": fio_cpus}
    tables = []
    # the checkout's .cache/ rather than /tmp, which may be a tmpfs (no O_DIRECT there)
    cache = HERE.parent / ".cache"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ringtgt-bench-", dir=cache) as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if "direct" in suites and not direct_capable(workdir):
            parser.error(f"the direct suite needs a work directory where O_DIRECT works (not tmpfs): {workdir} "
                         "refuses it; pass --workdir")
        for suite in suites:
            log(f"== {suite}")
            if suite in ("file", "direct", "null"):
                direct = suite == "direct"
                spdk = args.spdk if suite != "file" else None      # SPDK's file bdevs are always O_DIRECT
                names = ["ringtgt", "tgtd"] + (["spdk"] if spdk else [])
                images: list[Path | None] = [workdir / f"{n}.img" if suite != "null" else None for n in names]
                for image in images:
                    if image is not None:
                        prefill(image, size)
                        if direct:
                            drop_cached(image)
                servers: list = []
                try:
                    servers.append(RingTgtServer(workdir / f"ringtgt-{suite}", image=images[0], size=size,
                                                 workers=args.workers, server_extra=RINGTGT_SERVER, direct=direct,
                                                 lun_extra=RINGTGT_FILE_LUN if images[0] is not None else ""))
                    servers.append(TgtdServer(workdir / f"tgtd-{suite}", image=images[1], size=size, direct=direct,
                                              cpus=server_cpus if fio_cpus else None))
                    if spdk:
                        servers.append(SpdkServer(workdir / f"spdk-{suite}", spdk=spdk, image=images[2], size=size,
                                                  cpus=server_cpus))
                    table = side_by_side(servers, jobs, args.rounds, args.runtime, log, fio_cpus=fio_cpus)
                finally:
                    for server in servers:
                        server.stop()
                results[suite] = table
                cores = f", SPDK -m {servers[2].mask}" if spdk else ""
                if fio_cpus:
                    cores += f", tgtd on CPU {_cpu_list(server_cpus)}, fio on CPU {_cpu_list(fio_cpus)}"
                tables.append(format_table(f"{TITLES[suite]}, ringtgt workers={args.workers}{cores}", table, names))
            elif suite == "scaling":
                image = workdir / "ringtgt.img"
                prefill(image, size)
                servers = []
                try:
                    for workers in (2, 1):
                        server = RingTgtServer(workdir / f"scaling-{workers}", image=image, size=size,
                                               workers=workers, server_extra=RINGTGT_SERVER,
                                               lun_extra=RINGTGT_FILE_LUN)
                        server.name = f"workers={workers}"
                        servers.append(server)
                    table = side_by_side(servers, SCALING_JOBS, args.rounds, args.runtime, log)
                finally:
                    for server in servers:
                        server.stop()
                results[suite] = table
                tables.append(format_table("ringtgt scaling, file-backed LUN", table, ["workers=2", "workers=1"]))
            elif suite == "memory":
                mem = results[suite] = memory(workdir, size, args.runtime, log)
                tables.append("### ringtgt RSS per worker\n\n| state | RSS MiB per worker |\n|---|---|\n"
                              f"| idle | {', '.join(f'{v:.1f}' for v in mem['idle_mib'])} |\n"
                              f"| 64 sessions (per worker: {', '.join(map(str, mem['sessions']))}) | "
                              f"{', '.join(f'{v:.1f}' for v in mem['sessions_64_mib'])} |")
            elif suite == "rbd":
                results[suite], text = rbd_suite(workdir, min(size, 256 * MIB), args, log)
                tables.append(text)
            elif suite == "kernel":
                kernel_jobs = [job for job in jobs if job in kernel_suite.JOBS] or kernel_suite.JOBS
                results[suite] = kernel_suite.run(jobs=kernel_jobs, rounds=args.rounds, runtime=args.runtime,
                                                  size_mib=min(args.size, 256), server_extra=RINGTGT_SERVER, log=log,
                                                  guest_log=workdir / "kernel-guest.log")
                tables.append(kernel_suite.format_table(results[suite]))
            else:
                parser.error(f"unknown suite {suite!r}")
    results["machine"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    m = results["machine"]
    print(f"Machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}; load average before "
          f"{' '.join(m['loadavg_before'])}, after {' '.join(m['loadavg_after'])}; "
          f"{args.rounds} rounds x {args.runtime} s per cell, medians.\n")
    print("\n\n".join(tables))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
