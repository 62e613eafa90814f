"""Compare two `make bench` JSON results: flag every ringtgt metric that got worse beyond a threshold.

    perf/compare.py OLD.json NEW.json [--threshold 5%]

Looks at ringtgt's own cells (IOPS, MiB/s, p50, p99, CPU s/GiB) in every suite both files have, and at the
ringtgt/tgtd ratios (which cancel out much of a machine's drift between the two runs). Exits 1 when
anything regressed, 0 otherwise; prints one line per compared metric.
"""
from __future__ import annotations

import argparse
import json
import sys

# metric -> True when higher is better (ratios are always "higher is better")
METRICS = {"iops": True, "mib_s": True, "p50_us": False, "p99_us": False, "cpu_s_per_gib": False,
           "cpu_us_per_io": False}


def threshold(text: str) -> float:
    value = float(text.rstrip("%"))
    return value / 100 if text.endswith("%") or value >= 1 else value


def changes(old: dict, new: dict):
    """(suite, job, what, metric, old value, new value, higher is better) for every comparable metric."""
    for suite in ("file", "direct", "null", "scaling"):
        if suite not in old or suite not in new:
            continue
        for job, cells in new[suite].items():
            before = old[suite].get(job)
            if before is None:
                continue
            for who in [k for k in cells if k not in ("ratio", "ratios", "runs")][:1] + ["ratio"]:
                for metric, higher_better in METRICS.items():
                    a, b = before.get(who, {}).get(metric), cells[who].get(metric)
                    if a is None or b is None:
                        continue
                    yield suite, job, who, metric, a, b, higher_better if who != "ratio" else True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threshold", type=threshold, default=0.05, help="allowed worsening (default 5%%)")
    args = parser.parse_args(argv)
    with open(args.old) as f:
        old = json.load(f)
    with open(args.new) as f:
        new = json.load(f)
    regressions = 0
    compared = 0
    for suite, job, who, metric, a, b, higher_better in changes(old, new):
        compared += 1
        if not a:
            continue
        change = (b - a) / a
        worse = -change if higher_better else change
        flag = worse > args.threshold
        regressions += flag
        print(f"{'REGRESSION' if flag else 'ok':10} {suite:7} {job:18} {who:10} {metric:14} "
              f"{a:12.2f} -> {b:12.2f} ({change:+.1%})")
    if not compared:
        print("compare: no common suites/jobs to compare", file=sys.stderr)
        return 2
    print(f"{regressions} regression(s) beyond {args.threshold:.0%} in {compared} metrics")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
