"""Build ioring._liburing (cffi API mode) from ioring/_cdefs.h and ioring/_ffi_src.c.

setuptools runs it through `cffi_modules` in setup.py; `python build_ffi.py` compiles it in place
(ioring/_liburing*.so, with the generated ioring/_liburing.c and .o beside it).
"""
import os
import warnings

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, "ioring", name)) as f:
        return f.read()


ffibuilder = FFI()
ffibuilder.cdef(_read("_cdefs.h"))
ffibuilder.set_source("ioring._liburing", _read("_ffi_src.c"), libraries=["uring"],
                      py_limited_api=False)  # one file name (.cpython-3XX-*.so) for pip and in-place builds

if __name__ == "__main__":
    warnings.simplefilter("ignore")  # setuptools chatter about pyproject.toml while compiling
    ffibuilder.compile(tmpdir=HERE, verbose=False)
