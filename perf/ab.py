"""Two ringtgt builds or configurations side by side (A B A B …), for deciding what a change bought.

    perf/ab.py [--a-binary PATH] [--b-binary PATH] [--a-config LINES] [--b-config LINES] [--a-lun LINES] \\
               [--b-lun LINES] [--a-env K=V,…] [--bench-keys] [--jobs randread-4k-qd32,…] [--rounds 3] \\
               [--runtime 4] [--null | --direct [--workdir DIR]]

A binary is a `ringtgt` entry point (e.g. another checkout's .venv/bin/ringtgt; default: this one's);
config LINES are extra `[server]` lines, `;`-separated (e.g. "initial_r2t = false"), lun LINES extra keys of the
LUN (e.g. "atomic_writes = false"). Without --bench-keys both servers run ringtgt's defaults, not the bench's keys
(no busy poll among them: a QD1 job measures something else than the bench's row); with it, both get the bench's
`[server]` keys (bench.RINGTGT_SERVER) and, on a file LUN, its LUN keys (RINGTGT_FILE_LUN), ahead of their own
(which must not repeat them: a key twice is a TOML error). With fewer workers than CPUs fio runs on the CPUs the
workers do not (as in bench.py). Prints the per-run lines, then the median ratios A/B (> 1: A better) — CPU s/GiB
is the steadiest of them on a busy machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import JOBS, MIB, RINGTGT_FILE_LUN, RINGTGT_SERVER, direct_capable, side_by_side, split_cpus
from servers import RingTgtServer, drop_cached, prefill


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-binary", type=Path)
        parser.add_argument(f"--{side}-config", default="")
        parser.add_argument(f"--{side}-lun", default="")
        parser.add_argument(f"--{side}-env", default="", help="K=V,… for that server's environment")
    parser.add_argument("--bench-keys", action="store_true",
                        help="both servers with the bench's server (and file LUN) keys ahead of their own")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="LUN size in MiB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--null", action="store_true", help="null backstores instead of a prefilled file")
    parser.add_argument("--direct", action="store_true", help="the file LUN with `direct = true` (O_DIRECT)")
    parser.add_argument("--workdir", type=Path, help="where the image goes (default: a temporary directory; for "
                                                     "--direct on a file system with O_DIRECT, not tmpfs)")
    args = parser.parse_args(argv)
    size = args.size * MIB
    with tempfile.TemporaryDirectory(prefix="ringtgt-ab-", dir=args.workdir) as tmp:
        if args.direct and not direct_capable(Path(tmp)):
            parser.error(f"--direct: {tmp} refuses O_DIRECT (tmpfs?): pass --workdir")
        image = None if args.null else Path(tmp) / "lun.img"
        if image is not None:
            prefill(image, size)
            if args.direct:
                drop_cached(image)
        common_config = RINGTGT_SERVER if args.bench_keys else ""
        common_lun = RINGTGT_FILE_LUN if args.bench_keys and image is not None else ""
        servers = []
        try:
            for side in ("a", "b"):
                server = RingTgtServer(Path(tmp) / side, image=image, size=size, workers=args.workers,
                                       server_extra=_lines(common_config, getattr(args, f"{side}_config")),
                                       binary=getattr(args, f"{side}_binary"), direct=args.direct,
                                       lun_extra=_lines(common_lun, getattr(args, f"{side}_lun")),
                                       env=dict(kv.split("=", 1) for kv in getattr(args, f"{side}_env").split(",")
                                                if kv))
                server.name = side.upper()
                servers.append(server)
            table = side_by_side(servers, args.jobs.split(","), args.rounds, args.runtime,
                                 lambda text: print(text, flush=True), fio_cpus=split_cpus(args.workers)[1])
        finally:
            for server in servers:
                server.stop()
    for job, cells in table.items():
        print(f"{job:18} A/B " + "  ".join(f"{m} {v:.2f}" for m, v in cells["ratio"].items()))
    return 0


def _lines(common: str, own: str) -> str:
    """The common keys, then a side's own `;`-separated ones, as TOML lines."""
    return "\n".join(part for part in (common, own.replace(";", "\n")) if part)


if __name__ == "__main__":
    sys.exit(main())
