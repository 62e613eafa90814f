"""Build hook: setuptools compiles the cffi extension named in build_ffi.py (pyproject holds the metadata)."""
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
