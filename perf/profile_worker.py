"""Run one ringtgt worker in the foreground under cProfile; on SIGINT/SIGTERM print where its time went.

    .venv/bin/python perf/profile_worker.py --config cfg.toml [--sort tottime] [--limit 30]

Drive it with fio (perf/jobs/*.fio) meanwhile. cProfile inflates small-function costs; use it to rank, and
perf/ab.py to measure. For instruction counts (steady on a busy machine, unlike time), run it `--plain`
under `valgrind --tool=callgrind --instr-atstart=no`, switch counting on with `callgrind_control -i on`,
drive a fixed number of I/Os (fio's number_ios), stop it, and divide the total Ir by the I/Os.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from target.config import load_config  # noqa: E402
from target.worker import Worker  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--plain", action="store_true",
                        help="no cProfile: for running under `valgrind --tool=callgrind --instr-atstart=no`")
    args = parser.parse_args()
    worker = Worker(load_config(args.config), 0)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    if args.plain:
        worker.run()
        return 0
    profile = cProfile.Profile()
    profile.enable()
    worker.run()
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(args.sort).print_stats(args.limit)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
