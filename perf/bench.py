"""`make bench`: ringtgt against tgtd, side by side on this machine, with fio's libiscsi engine on loopback.

Both targets serve equal, fully written (prefilled) file-backed LUNs. Every job of perf/jobs/ runs against
each target in turn (A B A B …) for several short rounds, so drift and noise from the rest of the machine
hit both alike; each cell is the median over the rounds. The table gives IOPS, MiB/s, p50/p99 completion
latency, the CPU seconds each server spent per GiB moved (all its processes and threads, from /proc), and
the ratio ringtgt/tgtd (for latency and CPU the ratio is tgtd/ringtgt, so > 1 always means ringtgt is better).

Suites: `file` (the main matrix), `null` (the same matrix on null backstores: protocol overhead only),
`scaling` (ringtgt with 1 and 2 workers), `memory` (RSS per ringtgt worker idle and with 64 sessions), and `kernel`
(not in the default set: the Linux kernel initiator in a QEMU guest against ringtgt, LIO and tgtd,
perf/kernel_suite.py).
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
from servers import RingTgtServer, TgtdServer, cpu_seconds, established, fio_url, prefill, rss_bytes, socket_inodes

HERE = Path(__file__).resolve().parent
JOBS = ["randread-4k-qd32", "randwrite-4k-qd32", "seqread-128k-qd8", "seqwrite-128k-qd8", "randread-4k-qd1",
        "mixed-64k-70-30"]
SCALING_JOBS = ["randread-4k-qd32", "randwrite-4k-qd32"]
# ringtgt's defaults are the conservative ones (InitialR2T=Yes, ImmediateData=No: every write waits for an
# R2T). tgtd offers ImmediateData=Yes by default, so a 4k write is one PDU. The bench runs ringtgt as a perf
# lab would: first bursts as immediate data, and unsolicited Data-Out beyond it.
RINGTGT_SERVER = "initial_r2t = false\nimmediate_data = true\nbusy_poll_us = 50"
GIB = 1 << 30
MIB = 1 << 20
# metric -> True when higher is better
METRICS = {"iops": True, "mib_s": True, "p50_us": False, "p99_us": False, "cpu_s_per_gib": False}


def fio_binary() -> str:
    path = os.environ.get("RINGTGT_FIO") or str(HERE.parent / ".cache/fio/bin/fio")
    if not os.access(path, os.X_OK):
        sys.exit(f"bench: fio with the libiscsi engine not found at {path} (make fio builds it)")
    return path


def run_fio(job: str, server, runtime: int, extra: list[str] = ()) -> dict:
    """One fio run of perf/jobs/<job>.fio against `server`: throughput, latency, server CPU per GiB."""
    env = dict(os.environ, ISCSI_URL=fio_url(server.url), RUNTIME=str(runtime))
    pids = server.pids()
    cpu0 = cpu_seconds(pids)
    proc = subprocess.run([fio_binary(), "--output-format=json", *extra, str(HERE / "jobs" / f"{job}.fio")],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=runtime + 120)
    cpu = cpu_seconds(pids) - cpu0
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
    main = max(parts, key=lambda p: p["total_ios"])
    percentiles = main["clat_ns"].get("percentile", {})
    return {"iops": iops, "mib_s": bw / MIB, "p50_us": percentiles.get("50.000000", 0) / 1000,
            "p99_us": percentiles.get("99.000000", 0) / 1000,
            "cpu_s_per_gib": cpu / (moved / GIB) if moved else 0.0}


def median_cells(runs: list[dict]) -> dict:
    return {metric: statistics.median(r[metric] for r in runs) for metric in METRICS}


def ratio(metric: str, ours: float, theirs: float) -> float:
    """> 1 means ringtgt is better, whichever way the metric points."""
    if METRICS[metric]:
        return ours / theirs if theirs else float("inf")
    return theirs / ours if ours else float("inf")


def side_by_side(servers, jobs: list[str], rounds: int, runtime: int, log) -> dict:
    """{job: {server name: median cells, "ratio": {metric: ratio}}} from interleaved rounds."""
    runs = {job: {s.name: [] for s in servers} for job in jobs}
    for r in range(rounds):
        for job in jobs:
            for server in servers:
                result = run_fio(job, server, runtime)
                runs[job][server.name].append(result)
                log(f"  round {r + 1}/{rounds} {job:18} {server.name:10} {result['iops']:9.0f} IOPS "
                    f"{result['mib_s']:8.1f} MiB/s  p99 {result['p99_us']:8.0f} us  "
                    f"{result['cpu_s_per_gib']:6.2f} CPU s/GiB")
    table = {}
    a, b = servers[0].name, servers[1].name
    for job in jobs:
        cells = {name: median_cells(results) for name, results in runs[job].items()}
        cells["ratio"] = {m: ratio(m, cells[a][m], cells[b][m]) for m in METRICS}
        cells["runs"] = runs[job]
        table[job] = cells
    return table


def format_table(title: str, table: dict, a: str, b: str) -> str:
    head = (f"| job | {a} IOPS | {b} IOPS | {a} MiB/s | {b} MiB/s | {a} p50/p99 µs | {b} p50/p99 µs | "
            f"{a} CPU s/GiB | {b} CPU s/GiB | ratio IOPS | ratio p99 | ratio CPU |")
    lines = [f"### {title}", "", head, "|" + "---|" * 12]
    for job, cells in table.items():
        x, y, r = cells[a], cells[b], cells["ratio"]
        lines.append(f"| {job} | {x['iops']:.0f} | {y['iops']:.0f} | {x['mib_s']:.1f} | {y['mib_s']:.1f} | "
                     f"{x['p50_us']:.0f}/{x['p99_us']:.0f} | {y['p50_us']:.0f}/{y['p99_us']:.0f} | "
                     f"{x['cpu_s_per_gib']:.2f} | {y['cpu_s_per_gib']:.2f} | {r['iops']:.2f} | "
                     f"{r['p99_us']:.2f} | {r['cpu_s_per_gib']:.2f} |")
    return "\n".join(lines)


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


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="file,null,scaling,memory",
                        help="comma-separated: file, null, scaling, memory, kernel (default: all but kernel)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="comma-separated job names from perf/jobs/")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per job (default 3)")
    parser.add_argument("--runtime", type=int, default=4, help="seconds per fio run, after 1 s ramp (default 4)")
    parser.add_argument("--size", default=1024, type=int, help="LUN size in MiB (default 1024)")
    parser.add_argument("--workers", type=int, default=2, help="ringtgt workers (default 2)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="images and logs (default: a temporary directory)")
    args = parser.parse_args(argv)
    suites = args.suites.split(",")
    jobs = args.jobs.split(",")
    size = args.size * MIB
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results = {"machine": machine(), "runtime": args.runtime, "rounds": args.rounds, "workers": args.workers}
    tables = []
    with tempfile.TemporaryDirectory(prefix="ringtgt-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for suite in suites:
            log(f"== {suite}")
            if suite in ("file", "null"):
                images = [workdir / "ringtgt.img", workdir / "tgtd.img"] if suite == "file" else [None, None]
                for image in images:
                    if image is not None:
                        prefill(image, size)
                servers = []
                try:
                    servers.append(RingTgtServer(workdir / f"ringtgt-{suite}", image=images[0], size=size,
                                                 workers=args.workers, server_extra=RINGTGT_SERVER))
                    servers.append(TgtdServer(workdir / f"tgtd-{suite}", image=images[1], size=size))
                    table = side_by_side(servers, jobs, args.rounds, args.runtime, log)
                finally:
                    for server in servers:
                        server.stop()
                results[suite] = table
                title = "file-backed LUNs" if suite == "file" else "null backstores (protocol overhead)"
                tables.append(format_table(f"{title}, ringtgt workers={args.workers}", table, "ringtgt", "tgtd"))
            elif suite == "scaling":
                image = workdir / "ringtgt.img"
                prefill(image, size)
                servers = []
                try:
                    for workers in (2, 1):
                        server = RingTgtServer(workdir / f"scaling-{workers}", image=image, size=size,
                                               workers=workers, server_extra=RINGTGT_SERVER)
                        server.name = f"workers={workers}"
                        servers.append(server)
                    table = side_by_side(servers, SCALING_JOBS, args.rounds, args.runtime, log)
                finally:
                    for server in servers:
                        server.stop()
                results[suite] = table
                tables.append(format_table("ringtgt scaling, file-backed LUN", table, "workers=2", "workers=1"))
            elif suite == "memory":
                mem = results[suite] = memory(workdir, size, args.runtime, log)
                tables.append("### ringtgt RSS per worker\n\n| state | RSS MiB per worker |\n|---|---|\n"
                              f"| idle | {', '.join(f'{v:.1f}' for v in mem['idle_mib'])} |\n"
                              f"| 64 sessions (per worker: {', '.join(map(str, mem['sessions']))}) | "
                              f"{', '.join(f'{v:.1f}' for v in mem['sessions_64_mib'])} |")
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
