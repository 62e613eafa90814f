"""The per-command data path compiled with mypyc: which modules, and a check that the build is current.

These modules stay plain Python source (typed, checked by mypy like the rest); build_ffi.py compiles them in place,
each to an extension module beside its .py plus one shared library (`target/_compiled__mypyc`), and Python then
imports the compiled module ahead of the source. On this machine that takes two fifths to a half of a command's
instructions off (README, "The data path compiled"). A build older than a source would run old code: a compiled
module holds its own source and what it assumed of the modules it imports (their `Final` constants are inlined),
so a build older than any source of the three packages, or a compiled module left from a build that compiled a
module no longer listed, is refused when `target` is imported, naming the file and how to rebuild (`make setup`)
or to run the sources. Run as a script, this prints the listed sources, one per line (for the Makefile).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUP = "target._compiled"          # the shared library's module: target/_compiled__mypyc.*.so
PACKAGES = ("target", "ioring")     # where MODULES are

# The worker's loop and its counters, receive, decode, the CmdSN window, the command and its task, SCSI dispatch and
# its logical unit, READ and WRITE, the null and file backstores, responses, completion, the ring and the buffer
# pool: what every command runs through. (ioring's module joins this group rather than one of its own: a group of
# its own would be imported by this one's shared library at once, and with it ioring's cffi extension, which the
# sans-I/O iSCSI layer must not need; tests/test_layering.py.)
MODULES = (
    "target.reactor",
    "target.worker",
    "target.metrics.counters",
    "target.iscsi.pdu",
    "target.iscsi.framing",
    "target.iscsi.negotiation",     # (its SessionParams is read per command: a Python class's fields by name)
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
    "target.buffers",
    "ioring.ring",
)


def source(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def compiled_files(module: str, root: Path = ROOT) -> list[Path]:
    """The extension modules Python would import for `module` ahead of its source."""
    path = source(module, root)
    return sorted(path.parent.glob(f"{path.stem}.cpython-*.so"))


def stale(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(compiled file, the source it is older than) when the build is older than any source mypy read for it (a
    compiled module also holds what it assumed of the modules it imports: their `Final` constants, their classes'
    attribute types), and (file, its source) for every compiled module left from a build that compiled a module
    MODULES no longer names (extension modules named `_…` are the cffi ones and the shared library). The shared
    library alone runs nothing: without the modules' own extension modules the sources run, and nothing is stale."""
    built = _built(root)
    out = []
    if built:
        built += (root / "target").glob(f"{GROUP.split('.')[-1]}__mypyc.cpython-*.so")
        oldest = min(built, key=lambda path: path.stat().st_mtime)
        newest = max(sources(root), key=lambda path: path.stat().st_mtime)
        if oldest.stat().st_mtime < newest.stat().st_mtime:
            out.append((oldest, newest))
    for leftover in leftovers(root):
        out.append((leftover, leftover.with_name(leftover.name.split(".")[0] + ".py")))
    return out


def _built(root: Path) -> list[Path]:
    """The extension modules of MODULES that exist."""
    return [built for module in MODULES for built in compiled_files(module, root)]


def sources(root: Path = ROOT) -> list[Path]:
    """Every source of the packages mypy reads when it compiles MODULES."""
    return [path for package in ("target", "coordinator", "ioring") for path in (root / package).rglob("*.py")]


def leftovers(root: Path = ROOT) -> list[Path]:
    """Compiled modules of modules MODULES does not name (build_ffi.py removes them before it builds)."""
    named = set(_built(root))
    return [built for package in PACKAGES for built in sorted((root / package).rglob("*.cpython-*.so"))
            if built not in named and not built.name.startswith("_")]


def check_fresh(root: Path = ROOT) -> None:
    """Raise ImportError if the compiled modules are older than a source, or one is left from an earlier build."""
    old = stale(root)
    if old:
        built, path = old[0]
        raise ImportError(f"ringtgt: {built} is older than {path} or no longer built, so Python would run old code: "
                          "rebuild with `make setup` (or `python build_ffi.py`), or remove the compiled modules "
                          "(`find target ioring -name '*.cpython-*.so' ! -name '_*' -delete`) to run the sources")


def loaded() -> dict[str, bool]:
    """For every module of MODULES imported so far: whether it runs compiled."""
    return {name: not str(sys.modules[name].__file__).endswith(".py") for name in MODULES if name in sys.modules}


if __name__ == "__main__":
    print("\n".join(str(source(module).relative_to(ROOT)) for module in MODULES))
