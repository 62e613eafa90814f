"""Run one ringtgt worker in the foreground under cProfile; on SIGINT/SIGTERM print where its time went.

    .venv/bin/python perf/profile_worker.py --config cfg.toml [--sort tottime] [--limit 30]

Drive it with fio (perf/jobs/*.fio) meanwhile. cProfile inflates small-function costs; use it to rank, and
perf/ab.py to measure. For instruction counts (steady on a busy machine, unlike time), run it `--plain`
under `valgrind --tool=callgrind --instr-atstart=no`, switch counting on with `callgrind_control -i on`,
drive a fixed number of I/Os (fio's number_ios), stop it, and divide the total Ir by the I/Os.

A worker accepts connections only once the node's coordinator has given it the units' state, so this runs
`serve`'s preflight (state_dir made and locked, file images made or checked against their records) and starts a
coordinator of the same configuration first (a plain child process, outside valgrind and cProfile), stopped after
the worker.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from target.config import load_config  # noqa: E402
from target.preflight import PreflightError, preflight  # noqa: E402
from target.worker import Worker  # noqa: E402

COORDINATOR = ("import sys; from target.config import load_config; from coordinator.main import coordinator_main; "
               "coordinator_main(load_config(sys.argv[1]))")
COORDINATOR_START = 10.0      # seconds for its socket to appear


def start_coordinator(config_path: str, state_dir: Path) -> subprocess.Popen:
    """The node's coordinator for `config_path`, listening under `state_dir` (an earlier one's socket file is
    removed first, so its presence means this one listens)."""
    (state_dir / "coordinator.sock").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", COORDINATOR, config_path], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + COORDINATOR_START
    while not (state_dir / "coordinator.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"profile_worker: the coordinator did not start within {COORDINATOR_START:.0f} s")
        time.sleep(0.05)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--plain", action="store_true",
                        help="no cProfile: for running under `valgrind --tool=callgrind --instr-atstart=no`")
    parser.add_argument("--dump", metavar="FILE", help="also save the profile (pstats) to FILE")
    args = parser.parse_args()
    config = load_config(args.config)
    try:
        lock = preflight(config)
    except PreflightError as e:
        raise SystemExit(f"profile_worker: {e}") from None
    coordinator = start_coordinator(args.config, Path(config.server.state_dir))
    try:
        return run(Worker(config, 0), args)
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=30)
        os.close(lock)


def run(worker: Worker, args) -> int:
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    if args.plain:
        worker.run()
        return 0
    profile = cProfile.Profile()
    profile.enable()
    worker.run()
    profile.disable()
    if args.dump:
        profile.dump_stats(args.dump)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(args.sort).print_stats(args.limit)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
