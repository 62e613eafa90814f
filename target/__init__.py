"""ringtgt's iSCSI target: the worker and supervisor processes, the iSCSI and SCSI layers, the backstores.

Its packages have generic names (`target/` is many build tools' output folder), so importing this one checks that
the `coordinator` and `ioring` packages Python would import are the ones beside it: a stray folder of the same
name on sys.path fails here, naming itself, instead of somewhere deep in a worker. So does a compiled module of the
data path older than its source (compiled.py).
"""
import importlib.util
from pathlib import Path

from .compiled import check_fresh


def _check_siblings() -> None:
    home = Path(__file__).resolve().parent.parent
    for name in ("coordinator", "ioring"):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or Path(origin).resolve().parent.parent != home:
            raise ImportError(f"ringtgt: the {name!r} package Python finds ({origin or 'none'}) is not ringtgt's "
                              f"({home / name}): something on sys.path shadows it")


_check_siblings()
check_fresh()
