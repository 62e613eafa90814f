"""User-space instructions per I/O of one ringtgt worker (callgrind), for trees side by side: the load-insensitive
figure the fifth stop's changes were kept or dropped on (README, "The data path compiled").

    .venv/bin/python perf/callgrind_per_io.py [--direct | --null] [--rw randread] [--bs 4k] [--rwmixread N] \\
        [--qd 32] [--ios 4000] [--rounds 2] [--workdir DIR] [--keep] TREE [TREE ...]

Each round runs every TREE once, in turn (A B A B …): `perf/profile_worker.py --plain` of that tree under
`valgrind --tool=callgrind --instr-atstart=no` with the bench's server settings but `busy_poll_us = 0` (no spin
counted), counting switched on once it listens; fio's libiscsi engine runs 1,000 I/Os (a dump), then 1,000 + IOS
(a dump), and the difference over IOS is printed, so login and set-up cancel out. At QD32 a run's figure moves by
1-2 % with how many commands a turn batches (which follows the machine's load), at QD1 by up to 5 %: compare
medians of rounds. The O_DIRECT LUN is a 256 MiB file in --workdir (default /var/tmp: it must take O_DIRECT), with
the bench's file LUN keys (`atomic_writes = false`: the plain file store, as the bench runs it).
With --keep the dumps stay in the directory printed: ROUND-TREE/callgrind.out.2 is the second run's (1,000 + IOS
I/Os and its login: divide by its I/Os for a profile, not for the figure), for `callgrind_annotate --inclusive=yes`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import RINGTGT_FILE_LUN, direct_capable, fio_binary
from servers import HOST, IQN_RINGTGT, fio_url, free_port, listening, prefill, wait_for

START = 300.0               # seconds for a worker under valgrind to listen
RUN = 900.0                 # seconds for one fio run against it
SIZE = 256 << 20


def instructions(dump: Path) -> int:
    """The total instructions of one callgrind dump file."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"callgrind_per_io: no totals in {dump}")


def dump(pid: int, work: Path) -> Path:
    """Have the worker's callgrind write its counts so far (and zero them): the new dump file in `work`."""
    before = set(work.glob("callgrind.out*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True, timeout=60)
    new = wait_for(lambda: set(work.glob("callgrind.out*")) - before, 60, "the callgrind dump")
    time.sleep(0.5)                         # written out once valgrind has closed it
    return new.pop()


def measure(tree: Path, lun: str, args, work: Path) -> float:
    """Instructions per I/O of one worker of `tree` serving `lun` (its [[target.lun]] keys)."""
    port = free_port()
    config = work / "ringtgt.toml"
    config.write_text(f'[server]\nportals = ["{HOST}:{port}"]\nworkers = 1\nstate_dir = "{work / "state"}"\n'
                      'log_level = "warning"\nnop_interval = 0\ninitial_r2t = false\nimmediate_data = true\n'
                      f'busy_poll_us = 0\n[[target]]\niqn = "{IQN_RINGTGT}"\n\n[[target.lun]]\nid = 0\n{lun}\n')
    out = work / "callgrind.out"
    with open(work / "worker.log", "wb") as log:
        worker = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                                   sys.executable, "perf/profile_worker.py", "--plain", "--config", str(config)],
                                  cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)), stdout=log, stderr=log)
        def started() -> bool:
            if worker.poll() is not None:   # (a stale build refuses to import: say so now, not after START)
                raise RuntimeError(f"{tree}'s worker exited ({worker.returncode}) before listening: see {log.name}")
            return listening(port)

        try:
            wait_for(started, START, f"{tree}'s worker listening")
            subprocess.run(["callgrind_control", "-i", "on", str(worker.pid)], check=True, capture_output=True,
                           timeout=60)
            url = fio_url(f"iscsi://{HOST}:{port}/{IQN_RINGTGT}/0")
            counts = []
            for ios in (1000, 1000 + args.ios):
                subprocess.run([fio_binary(), "--name=callgrind", "--ioengine=libiscsi", f"--filename={url}",
                                f"--rw={args.rw}", f"--bs={args.bs}", f"--iodepth={args.qd}", f"--number_ios={ios}",
                                f"--size={SIZE}", "--norandommap", "--randrepeat=0",
                                *([f"--rwmixread={args.rwmixread}"] if args.rwmixread is not None else [])], check=True,
                               capture_output=True, timeout=RUN)
                counts.append(instructions(dump(worker.pid, work)))
        finally:
            worker.terminate()
            worker.wait(timeout=120)
    return (counts[1] - counts[0]) / args.ios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts with their cffi extensions built")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--direct", action="store_true", help="an O_DIRECT file LUN (`direct = true`; the default)")
    kind.add_argument("--null", action="store_true", help="a null LUN")
    parser.add_argument("--rw", default="randread", help="fio's rw= (randread, randwrite, randrw)")
    parser.add_argument("--bs", default="4k", help="fio's bs= (default 4k)")
    parser.add_argument("--rwmixread", type=int, help="fio's rwmixread= (with --rw randrw; the bench's mix: 70)")
    parser.add_argument("--qd", type=int, default=32)
    parser.add_argument("--ios", type=int, default=4000, help="I/Os measured per run (default 4000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the dumps (and the LUN file)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="ringtgt-callgrind-", dir=args.workdir)
            print(f"dumps kept in {tmp}", flush=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ringtgt-callgrind-", dir=args.workdir))
        if args.null:
            lun = f'backstore = "null"\nsize = {SIZE}'
        else:
            if not direct_capable(Path(tmp)):
                parser.error(f"{tmp} refuses O_DIRECT (tmpfs?): pass --workdir")
            image = Path(tmp) / "lun.img"
            prefill(image, SIZE)
            lun = f'path = "{image}"\nsize = {SIZE}\ndirect = true\n{RINGTGT_FILE_LUN}'
        figures: dict[Path, list[float]] = {tree.resolve(): [] for tree in args.trees}
        for round_ in range(args.rounds):
            for index, (tree, runs) in enumerate(figures.items()):
                work = Path(tmp) / f"{round_}-{index}"
                work.mkdir()
                runs.append(measure(tree, lun, args, work))
                print(f"round {round_ + 1}/{args.rounds} {tree}: {runs[-1] / 1000:.1f}k instructions/I/O", flush=True)
    for tree, runs in figures.items():
        print(f"{tree}: median {statistics.median(runs) / 1000:.1f}k instructions/I/O "
              f"({', '.join(f'{r / 1000:.1f}k' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
