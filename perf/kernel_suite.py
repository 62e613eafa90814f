"""`perf/bench.py --suites kernel`: the Linux kernel initiator (iscsi_tcp, /dev/sdX, fio libaio direct=1) against
ringtgt, LIO (the kernel's own target, fileio backstore) and tgtd, all three serving the same prefilled image in one
QEMU guest (tests/guest.py boots it; perf/kernel_bench.sh runs there). Jobs are perf/jobs/'s, their libiscsi
engine swapped for libaio on the block device; rounds interleave the three targets job by job, cells are medians.

Under TCG (no usable KVM) the guest's CPU is emulated: absolute figures are an order of magnitude below the host's
and mean little; the ratios still rank the three targets, which share the same emulated CPUs, memory and kernel.
"""
from __future__ import annotations

import configparser
import json
import shlex
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the guest harness, shared with the kernel-initiator tests

import guest  # noqa: E402

TARGETS = ("ringtgt", "lio", "tgtd")
JOBS = ["randread-4k-qd32", "randwrite-4k-qd32", "seqread-128k-qd8", "seqwrite-128k-qd8", "randread-4k-qd1"]
JOB_KEYS = ("rw", "bs", "iodepth", "numjobs", "rwmixread")
MIB = 1 << 20
METRICS = {"iops": True, "mib_s": True, "p50_us": False, "p99_us": False}   # True: higher is better
GUEST_FIO = "/usr/bin/fio"      # Debian's, generic x86-64 (a host-tuned build may SIGILL under TCG)


def job_options(job: str) -> str:
    """The I/O shape of perf/jobs/<job>.fio (its job section's rw, bs, depth, jobs) as fio arguments."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(HERE / "jobs" / f"{job}.fio")
    section = parser[job]
    return " ".join(f"--{key}={section[key]}" for key in JOB_KEYS if key in section)


def cells(report: dict) -> dict:
    """IOPS, MiB/s and p50/p99 completion latency of one fio JSON report (reads and writes summed)."""
    stats = report["jobs"][0]
    parts = [stats[d] for d in ("read", "write") if stats[d]["total_ios"]]
    main = max(parts, key=lambda p: p["total_ios"])
    percentiles = main["clat_ns"].get("percentile", {})
    return {"iops": sum(p["iops"] for p in parts), "mib_s": sum(p["bw_bytes"] for p in parts) / MIB,
            "p50_us": percentiles.get("50.000000", 0) / 1000, "p99_us": percentiles.get("99.000000", 0) / 1000}


def ratio(metric: str, ours: float, theirs: float) -> float:
    """> 1 means ringtgt is better, whichever way the metric points."""
    if METRICS[metric]:
        return ours / theirs if theirs else float("inf")
    return theirs / ours if ours else float("inf")


def run(*, jobs: list[str], rounds: int, runtime: int, size_mib: int, server_extra: str, log, guest_log: Path) -> dict:
    """Boot the guest, run every job on every target for `rounds` rounds: {"accel", "seconds", "table"}.
    The guest's output goes to `guest_log` as it comes."""
    job_lines = "\n".join(f"{job} {job_options(job)}" for job in jobs)
    header = "\n".join([f"RINGTGT={shlex.quote(str(Path(sys.executable).parent / 'ringtgt'))}",
                        f"RINGTGT_REPO={shlex.quote(str(guest.REPO))}",
                        f"RINGTGT_SERVER={shlex.quote(server_extra)}", f"FIO={GUEST_FIO}",
                        f"SIZE_MIB={size_mib}", f"ROUNDS={rounds}", f"RUNTIME={runtime}",
                        f"JOBS={shlex.quote(job_lines)}", ""])
    budget = 600 + rounds * len(jobs) * len(TARGETS) * (runtime + 30)
    result = guest.run_script(header + (HERE / "kernel_bench.sh").read_text(), timeout=budget, log=guest_log)
    runs: dict[str, dict[str, list[dict]]] = {job: {t: [] for t in TARGETS} for job in jobs}
    for line in result.output.splitlines():
        if line.startswith("DEVICE "):
            log(f"  {line}")
        if not line.startswith("FIO "):
            continue
        _, target, job, round_, report = line.split(" ", 4)
        measured = cells(json.loads(report))
        runs[job][target].append(measured)
        log(f"  round {round_}/{rounds} {job:18} {target:8} {measured['iops']:9.0f} IOPS "
            f"{measured['mib_s']:8.1f} MiB/s  p99 {measured['p99_us']:8.0f} us")
    if result.status != 0 or any(len(r) != rounds for per_job in runs.values() for r in per_job.values()):
        raise RuntimeError(f"kernel suite: the guest ({result.accel}) exited {result.status}:\n{result.output[-4000:]}")
    table = {}
    for job, per_target in runs.items():
        medians = {t: {m: statistics.median(r[m] for r in results) for m in METRICS}
                   for t, results in per_target.items()}
        for other in ("lio", "tgtd"):
            medians[f"ratio_{other}"] = {m: ratio(m, medians["ringtgt"][m], medians[other][m]) for m in METRICS}
        table[job] = dict(medians, runs=per_target)
    return {"accel": result.accel, "seconds": result.seconds, "table": table}


def format_table(results: dict) -> str:
    note = ("TCG: emulated CPU, absolute figures mean little; compare the ratios" if results["accel"] == "tcg"
            else "KVM")
    lines = [f"### Linux kernel initiator in a QEMU guest ({note}), fio libaio direct=1 on /dev/sdX", "",
             "| job | ringtgt IOPS | LIO IOPS | tgtd IOPS | ringtgt p50/p99 µs | LIO p50/p99 µs | tgtd p50/p99 µs "
             "| IOPS ÷ LIO | IOPS ÷ tgtd | p99 LIO ÷ ringtgt | p99 tgtd ÷ ringtgt |", "|" + "---|" * 11]
    for job, c in results["table"].items():
        lines.append(f"| {job} | " + " | ".join(f"{c[t]['iops']:.0f}" for t in TARGETS) + " | "
                     + " | ".join(f"{c[t]['p50_us']:.0f}/{c[t]['p99_us']:.0f}" for t in TARGETS) + " | "
                     f"{c['ratio_lio']['iops']:.2f} | {c['ratio_tgtd']['iops']:.2f} | "
                     f"{c['ratio_lio']['p99_us']:.2f} | {c['ratio_tgtd']['p99_us']:.2f} |")
    return "\n".join(lines)
