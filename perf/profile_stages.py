"""Group a `perf/profile_worker.py --dump` profile by the stages of a command: each stage's share of the worker's
Python work (own time; the ring's wait, `rt_turn`, and the set-up's `gc.collect` left out).

    .venv/bin/python perf/profile_stages.py PROFILE [PROFILE ...] [--instructions N ...]

With `--instructions` (callgrind's instructions per I/O of the same cell, one per profile) each share is also
given in instructions. cProfile inflates small functions, so the split is approximate; builtins count as "rest".
"""
from __future__ import annotations

import argparse
import pstats
import sys

STAGES = ("receive", "dispatch", "backstore", "completion", "response", "counters", "rest")
LEFT_OUT = {"<built-in method ioring._liburing.rt_turn>", "<built-in method gc.collect>"}
ALL = None
# (a part of the file's path, or path:line for a lambda; the functions, ALL for every one) -> stage; first match
RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("metrics/", ALL, "counters"),
    ("iscsi/framing.py", ALL, "receive"), ("iscsi/sequencing.py", ALL, "receive"), ("iscsi/pdu.py", ALL, "receive"),
    ("worker.py", frozenset({"_received", "_arm_recv", "_received_before_login", "_ack_now"}), "receive"),
    ("worker.py:348", ALL, "receive"), ("worker.py:302", ALL, "receive"),   # the channels' lambdas (line numbers
                                                                            # of target/worker.py: keep in step)
    ("iscsi/connection.py", frozenset({"receive_data", "receive_into_segment", "segment_received", "header_wanted",
                                       "receive_ahead", "ahead_received", "_take"}), "receive"),
    ("ring.py", frozenset({"prep_recv", "prep_recv_parts", "prep_recv_at"}), "receive"),
    ("~", frozenset({"<built-in method ioring._liburing.rt_prep_recv>",
                     "<built-in method ioring._liburing.rt_prep_recv_parts>"}), "receive"),
    ("iscsi/connection.py", frozenset({"_task_done"}), "completion"),
    ("iscsi/command.py", frozenset({"complete"}), "completion"),
    ("scsi/task.py", frozenset({"finish"}), "completion"),
    ("scsi/sbc.py", frozenset({"done"}), "completion"),
    ("reactor.py", frozenset({"_dispatch", "_run_soon", "token", "call_soon"}), "completion"),
    ("ring.py", frozenset({"_reaped"}), "completion"),
    ("backstore/null.py", frozenset({"_later", "<lambda>"}), "completion"),
    ("iscsi/responses.py", ALL, "response"),
    ("worker.py", frozenset({"_coalesce", "_send_pending", "_flush", "_send", "_sent", "output_ready"}), "response"),
    ("worker.py:303", ALL, "response"), ("worker.py:304", ALL, "response"),
    ("iscsi/connection.py", frozenset({"output_sent", "take_output", "_seq"}), "response"),
    ("ring.py", frozenset({"prep_send"}), "response"),
    ("~", frozenset({"<built-in method ioring._liburing.rt_prep_send>"}), "response"),
    ("backstore/", ALL, "backstore"), ("buffers.py", ALL, "backstore"),
    ("ring.py", frozenset({"prep_read", "prep_write"}), "backstore"),
    ("target/iscsi/", ALL, "dispatch"), ("target/scsi/", ALL, "dispatch"),
)


def stage(path: str, line: int, name: str) -> str:
    """The stage of the function `name` at `path`:`line`."""
    for part, names, where in RULES:
        file, _, at = part.partition(":")
        matches = path.endswith(file) and str(line) == at if at else file in path
        if matches and (names is ALL or name in names):
            return where
    return "rest"


def shares(profile: str) -> dict[str, float]:
    """Each stage's share (0..1) of the own time in `profile`."""
    own = dict.fromkeys(STAGES, 0.0)
    for (path, line, name), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if name not in LEFT_OUT:
            own[stage(path, line, name)] += tottime
    total = sum(own.values()) or 1.0
    return {key: value / total for key, value in own.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--instructions", type=float, nargs="*", default=[])
    args = parser.parse_args()
    if args.instructions and len(args.instructions) != len(args.profiles):
        parser.error("--instructions: one per profile")
    print("| stage | " + " | ".join(args.profiles) + " |")
    print("|---|" + "---|" * len(args.profiles))
    split = [shares(profile) for profile in args.profiles]
    for key in STAGES:
        cells = [f"{one[key] * args.instructions[i] / 1000:.1f}k ({one[key] * 100:.0f} %)" if args.instructions
                 else f"{one[key] * 100:.0f} %" for i, one in enumerate(split)]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
