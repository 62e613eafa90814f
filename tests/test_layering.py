"""The layers' import rules: the sans-I/O iSCSI package works without the compiled ring; ringtgt's packages are
imported together or not at all."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_without_the_ring(*modules: str) -> subprocess.CompletedProcess:
    """Import `modules` in a fresh interpreter where ioring's compiled extension cannot be loaded."""
    code = "import sys; sys.modules['ioring._liburing'] = None\n" + "".join(f"import {m}\n" for m in modules)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_iscsi_layer_needs_no_compiled_ring():
    proc = imports_without_the_ring("target.iscsi.connection", "target.iscsi.login", "target.iscsi.framing")
    assert proc.returncode == 0, proc.stderr


def test_the_check_proves_something():
    proc = imports_without_the_ring("target.reactor", "ioring")
    assert proc.returncode != 0 and "ioring._liburing" in proc.stderr


def test_a_package_of_the_same_name_elsewhere_is_named_at_once(tmp_path):
    """A stray `ioring` ahead of ours on sys.path (here: the current directory) is refused on import, by name."""
    (tmp_path / "ioring").mkdir()
    (tmp_path / "ioring" / "__init__.py").write_text("")
    proc = subprocess.run([sys.executable, "-c", "import target"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert f"the 'ioring' package Python finds ({tmp_path / 'ioring' / '__init__.py'}) is not ringtgt's" in proc.stderr
