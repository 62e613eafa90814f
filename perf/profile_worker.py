"""Run one ringtgt worker in the foreground under cProfile; on SIGINT/SIGTERM print where its time went.

    .venv/bin/python perf/profile_worker.py --config cfg.toml [--sort tottime] [--limit 30] [--ios N]

Drive it with fio (perf/jobs/*.fio) meanwhile. With --ios N (the I/Os fio reported) every line also gets
µs per I/O, the unit of the budget in DESIGN.md. cProfile inflates small-function costs; use it to rank,
and the A/B bench to measure.
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
    args = parser.parse_args()
    worker = Worker(load_config(args.config), 0)
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
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
