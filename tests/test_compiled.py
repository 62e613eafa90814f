"""The data path compiled with mypyc (target/compiled.py): built by `make setup`, loaded ahead of the sources, and
refused when older than its source."""
import importlib
import os
import subprocess

import pytest

from target import compiled


def test_every_module_of_the_data_path_runs_compiled():
    for name in compiled.MODULES:
        importlib.import_module(name)
    kinds = compiled.loaded()
    assert sorted(kinds) == sorted(compiled.MODULES)
    assert all(kinds.values()), f"running from source: {[name for name, built in kinds.items() if not built]}"


def _tree(tmp_path, age: int):
    """A tree holding one module of the data path and a compiled file `age` seconds older than its source."""
    source = compiled.source(compiled.MODULES[0], tmp_path)
    source.parent.mkdir(parents=True)
    source.write_text("")
    built = source.with_name(f"{source.stem}.cpython-311-x86_64-linux-gnu.so")
    built.write_bytes(b"")
    now = source.stat().st_mtime
    os.utime(built, (now - age, now - age))
    return source, built


def test_a_compiled_module_older_than_its_source_is_refused_naming_both(tmp_path):
    source, built = _tree(tmp_path, 10)
    with pytest.raises(ImportError, match="older than") as refused:
        compiled.check_fresh(tmp_path)
    assert str(built) in str(refused.value) and str(source) in str(refused.value)
    assert "make setup" in str(refused.value)


def test_a_compiled_module_as_new_as_its_source_is_taken(tmp_path):
    _tree(tmp_path, 0)
    compiled.check_fresh(tmp_path)
    assert compiled.stale(tmp_path) == []


def test_the_shared_library_alone_runs_nothing_and_is_not_refused(tmp_path):
    source, built = _tree(tmp_path, 10)
    built.unlink()                                  # the modules' own extension modules removed: the sources run
    group = tmp_path / "target" / "_compiled__mypyc.cpython-311-x86_64-linux-gnu.so"
    group.write_bytes(b"")
    os.utime(group, (source.stat().st_mtime - 10,) * 2)
    compiled.check_fresh(tmp_path)
    built.write_bytes(b"")                          # with one back, the older shared library is refused
    with pytest.raises(ImportError, match=str(group)):
        compiled.check_fresh(tmp_path)


@pytest.mark.parametrize("package, cffi_module", [("target", "_librbd"), ("ioring", "_liburing")])
def test_a_compiled_module_no_longer_listed_is_refused(tmp_path, package, cffi_module):
    _tree(tmp_path, 0)
    (tmp_path / package).mkdir(exist_ok=True)
    leftover = tmp_path / package / "gone.cpython-311-x86_64-linux-gnu.so"
    leftover.write_bytes(b"")
    (tmp_path / package / f"{cffi_module}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # a cffi module: taken
    assert compiled.stale(tmp_path) == [(leftover, tmp_path / package / "gone.py")]
    with pytest.raises(ImportError, match="no longer built"):
        compiled.check_fresh(tmp_path)


def test_the_sources_listed_for_the_makefile_are_the_modules():
    listed = subprocess.run(["python3", compiled.ROOT / "target" / "compiled.py"], capture_output=True, text=True,
                            check=True, timeout=60).stdout.splitlines()
    assert listed == [str(compiled.source(name).relative_to(compiled.ROOT)) for name in compiled.MODULES]
