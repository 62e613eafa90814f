"""Build the cffi extensions (API mode): ioring._liburing from ioring/_cdefs.h and ioring/_ffi_src.c, and
target.backstore._librbd (the RBD backstore's librbd calls) from target/backstore/_librbd_cdefs.h and _librbd_src.c.

setuptools runs them through `cffi_modules` in setup.py; `python build_ffi.py` compiles them in place (the .so
files, with the generated .c and .o beside them).
"""
import os
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

if __name__ == "__main__":
    warnings.simplefilter("ignore")  # setuptools chatter about pyproject.toml while compiling
    ffibuilder.compile(tmpdir=HERE, verbose=False)
    rbd_ffibuilder.compile(tmpdir=HERE, verbose=False)
