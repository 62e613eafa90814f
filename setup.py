"""Build hook: setuptools compiles the cffi extensions named in build_ffi.py (pyproject holds the metadata)."""
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder", "build_ffi.py:rbd_ffibuilder"])
