"""Where a QD1 cycle's time goes: the bench's null randread-4k-qd1 job against each server, timed from the kernel's
tracepoints (`perf record -a`, Debian's linux-perf), medians over the cycles of a short window in each run.

    .venv/bin/python perf/qd1_timeline.py [--spdk DIR] [--tgtd] [--rounds 3] [--window 0.5]

A cycle is the command's packet on the loopback (`net:net_dev_xmit`, 114 bytes: a bare SCSI Command PDU), the
response's (the 4 KiB Data-In with its status) and the next command's. For every server: the answer (command to
response) and the initiator's turnaround (response to next command: fio's libiscsi engine, on the other CPU). For
ringtgt the answer is split at its ring's tracepoints: the command's way to the worker (its receive's task work
queued, `io_uring:io_uring_task_add`, by the softirq on fio's CPU), the receive (`io_uring:io_uring_complete` of
the RECV, on the worker's CPU), the worker's Python from that completion to the response's submission
(`io_uring:io_uring_submit_req` of the SEND) and the kernel's send to the loopback. The tracepoints themselves cost
a little on every cycle: compare servers within one run, not with the bench's IOPS. ringtgt runs with the bench's
server keys (`workers = 1`), SPDK with -m 0x1 and tgtd on the servers' CPU, fio on the other, as in the bench.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import MIB, RINGTGT_SERVER, run_fio, split_cpus
from servers import RingTgtServer, SpdkServer, TgtdServer

JOB = "randread-4k-qd1"
COMMAND_PACKET = 114            # Ethernet 14 + IPv4 20 + TCP 32 (timestamps) + a 48-byte BHS
RESPONSE_AT_LEAST = 4096 + 48   # a Data-In carrying the 4 KiB block
EVENTS = ("net:net_dev_xmit", "io_uring:io_uring_task_add", "io_uring:io_uring_complete",
          "io_uring:io_uring_submit_req")
LINE = re.compile(r"\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)")
STAGES = (("to the worker", "command", "queued"), ("receive", "queued", "received"),
          ("worker (Python)", "received", "submitted"), ("send", "submitted", "response"))


def record(server, seconds: float, window: float, fio_cpus: list[int], workdir: Path) -> tuple[dict, str]:
    """fio's QD1 job against `server` (serving) for `seconds`, and `perf record -a` of EVENTS over `window` s in
    the middle of it: fio's report and `perf script`'s lines."""
    data = workdir / f"{server.name}.perf.data"
    with ThreadPoolExecutor(1) as pool:       # (fio's failure, if any, raised here by result())
        fio = pool.submit(run_fio, JOB, server, int(seconds), [f"--cpus_allowed={','.join(map(str, fio_cpus))}"])
        time.sleep(seconds / 2 - window / 2)
        events = ",".join(EVENTS)
        subprocess.run(["perf", "record", "-q", "-a", "-e", events, "-o", str(data), "--", "sleep", str(window)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=60)
        report = fio.result()                 # (run_fio's own deadline bounds the wait)
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,cpu,time,event,trace", "--ns"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    return report, script


def cycles(script: str, worker_pids: set[int]) -> list[dict[str, float]]:
    """The QD1 cycles in `perf script`'s lines: for each, the times (µs) of its command and response packets and,
    for a ringtgt worker in `worker_pids`, of its receive's task work queued and completed and its send's
    submission."""
    found: list[dict[str, float]] = []
    current: dict[str, float] = {}
    for line in script.splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        pid, at, event, trace = int(match[1]), float(match[3]) * 1e6, match[4], match[5]
        if event == "net:net_dev_xmit":
            length = int(re.search(r"len=(\d+)", trace)[1])
            if length == COMMAND_PACKET:
                current = {"command": at}
            elif length >= RESPONSE_AT_LEAST and "command" in current:
                current["response"] = at
                found.append(current)
                current = {}
        elif "command" not in current or not worker_pids:
            continue
        elif event == "io_uring:io_uring_task_add" and "RECV" in trace:
            current.setdefault("queued", at)
        elif pid in worker_pids and event == "io_uring:io_uring_complete" and "queued" in current:
            current.setdefault("received", at)
        elif pid in worker_pids and event == "io_uring:io_uring_submit_req" and "SEND" in trace:
            current.setdefault("submitted", at)
    return found


def medians(found: list[dict[str, float]]) -> dict[str, float]:
    """Median µs of the answer, the initiator's turnaround and (where the cycles have them) ringtgt's stages."""
    def median(pairs) -> float:
        values = [b - a for a, b in pairs]
        return statistics.median(values) if values else float("nan")
    result = {"answer": median((c["command"], c["response"]) for c in found),
              "turnaround": median((a["response"], b["command"]) for a, b in zip(found, found[1:]))}
    for name, start, end in STAGES:
        if any(start in c and end in c for c in found):
            result[name] = median((c[start], c[end]) for c in found if start in c and end in c)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spdk", type=Path, help="an SPDK build's directory (build/bin/iscsi_tgt, scripts/rpc.py)")
    parser.add_argument("--tgtd", action="store_true", help="Debian's tgtd too")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=0.5, help="seconds traced per run (default 0.5)")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        parser.error("perf not found: it comes with Debian's linux-perf (apt-get install linux-perf)")
    server_cpus, fio_cpus = split_cpus(1)
    size = 512 * MIB
    with tempfile.TemporaryDirectory(prefix="ringtgt-qd1-") as tmp:
        workdir = Path(tmp)
        servers: list = []
        try:
            servers.append(RingTgtServer(workdir / "ringtgt", image=None, size=size, workers=1,
                                         server_extra=RINGTGT_SERVER))
            if args.tgtd:
                servers.append(TgtdServer(workdir / "tgtd", image=None, size=size, cpus=server_cpus))
            if args.spdk:
                servers.append(SpdkServer(workdir / "spdk", spdk=args.spdk, image=None, size=size, cpus=server_cpus))
            for r in range(args.rounds):
                for server in servers:
                    with server.serving():
                        pids = set(server.worker_pids()) if isinstance(server, RingTgtServer) else set()
                        report, script = record(server, 6.0, args.window, fio_cpus, workdir)
                    found = cycles(script, pids)
                    stages = "  ".join(f"{name} {us:.1f}" for name, us in medians(found).items())
                    print(f"round {r + 1}/{args.rounds} {server.name:8s} {report['iops']:7.0f} IOPS  "
                          f"{len(found)} cycles traced, median µs: {stages}", flush=True)
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
