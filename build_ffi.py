"""Build the cffi extensions (API mode): ioring._liburing from ioring/_cdefs.h and ioring/_ffi_src.c, and
target.backstore._librbd (the RBD backstore's librbd calls) from target/backstore/_librbd_cdefs.h and _librbd_src.c;
and the data path's modules compiled with mypyc (target/compiled.py names them).

setuptools runs the cffi builds through `cffi_modules` in setup.py; `python build_ffi.py` compiles all of them in
place (the .so files, with the generated .c and .o beside them; mypyc's C sources and objects under build/).
"""
import os
import sys
import warnings

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(*path: str) -> str:
    with open(os.path.join(HERE, *path)) as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read("ioring", "_cdefs.h"))
ffibuilder.set_source("ioring._liburing", _read("ioring", "_ffi_src.c"), libraries=["uring"],
                      py_limited_api=False)  # one file name (.cpython-3XX-*.so) for pip and in-place builds

rbd_ffibuilder = FFI()
rbd_ffibuilder.cdef(_read("target", "backstore", "_librbd_cdefs.h"))
rbd_ffibuilder.set_source("target.backstore._librbd", _read("target", "backstore", "_librbd_src.c"),
                          libraries=["rbd", "rados"], py_limited_api=False)



def compile_data_path() -> None:
    """mypyc the modules of target/compiled.py into extension modules beside their sources (one group: one shared
    library, so that calls between them stay native)."""
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit("build_ffi.py: mypyc is missing: it comes with mypy (pip install -e '.[test]', as `make setup` does)")
    from setuptools import setup

    sys.path.insert(0, os.path.join(HERE, "target"))
    import compiled     # (as a file: importing the package `target` would check the very files built here)

    for leftover in compiled.leftovers():
        leftover.unlink()
    os.chdir(HERE)
    modules = [str(compiled.source(module).relative_to(HERE)) for module in compiled.MODULES]
    setup(name="ringtgt-compiled", ext_modules=mypycify(modules, group_name=compiled.GROUP),
          script_args=["-q", "build_ext", "--inplace", "--force"])  # (every file new: see compiled.stale)


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # setuptools chatter about pyproject.toml while compiling
    ffibuilder.compile(tmpdir=HERE, verbose=False)
    rbd_ffibuilder.compile(tmpdir=HERE, verbose=False)
    compile_data_path()
