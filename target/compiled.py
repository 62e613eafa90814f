"""The per-command data path compiled with mypyc: which modules, and a check that none of them is older than its
source.

These modules stay plain Python source (typed, checked by mypy like the rest); build_ffi.py compiles them in place,
each to an extension module beside its .py plus one shared library (`target/_compiled__mypyc`), and Python then
imports the compiled module ahead of the source. On this machine that takes about a fifth of a command's
instructions off (README, "The data path compiled"). A compiled module older than its source would run the old
code (and so would one left from a build that compiled a module no longer listed), so importing `target` refuses
it, naming the module and how to rebuild (`make setup`) or to run the source
(delete the compiled files: `make clean`). Run as a script, this prints the sources, one per line (the Makefile's
prerequisites of the build).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUP = "target._compiled"          # the shared library's module: target/_compiled__mypyc.*.so

# The worker's loop and its counters, receive, decode, the CmdSN window, the command and its task, SCSI dispatch and
# its logical unit, READ and WRITE, the null and file backstores, responses, completion: what every command runs
# through.
MODULES = (
    "target.reactor",
    "target.worker",
    "target.metrics.counters",
    "target.iscsi.pdu",
    "target.iscsi.framing",
    "target.iscsi.sequencing",
    "target.iscsi.command",
    "target.iscsi.responses",
    "target.iscsi.connection",
    "target.scsi.task",
    "target.scsi.target",
    "target.scsi.lun",
    "target.scsi.sbc",
    "target.scsi.data_out",
    "target.backstore.null",
    "target.backstore.file",
    "target.backstore.atomic",      # (its store subclasses the file store: compiled as that is)
)


def source(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_files(module: str, root: Path = ROOT) -> list[Path]:
    """The extension modules Python would import for `module` ahead of its source."""
    path = source(module, root)
    return sorted(path.parent.glob(f"{path.stem}.cpython-*.so"))


def stale(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(compiled file, its source) for every compiled module older than its source, and for every one left from a
    build that compiled a module MODULES no longer names (extension modules named `_…` are the cffi ones and the
    shared library)."""
    out = []
    for module in MODULES:
        path = source(module, root)
        for built in compiled_files(module, root):
            if built.stat().st_mtime < path.stat().st_mtime:
                out.append((built, path))
    named = {built for module in MODULES for built in compiled_files(module, root)}
    for built in sorted((root / "target").rglob("*.cpython-*.so")):
        if built not in named and not built.name.startswith("_"):
            out.append((built, built.with_name(built.name.split(".")[0] + ".py")))
    return out


def check_fresh(root: Path = ROOT) -> None:
    """Raise ImportError if a compiled module is older than its source, or left from an earlier build."""
    old = stale(root)
    if old:
        built, path = old[0]
        raise ImportError(f"ringtgt: {built} is older than {path} or no longer built, so Python would run old code: "
                          "rebuild with `make setup` (or `python build_ffi.py`), or remove it (`make clean`) to run "
                          "the source")


def loaded() -> dict[str, bool]:
    """For every module of MODULES imported so far: whether it runs compiled."""
    return {name: not str(sys.modules[name].__file__).endswith(".py") for name in MODULES if name in sys.modules}


if __name__ == "__main__":
    print("\n".join(str(source(module).relative_to(ROOT)) for module in MODULES))
