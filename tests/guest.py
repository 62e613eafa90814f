"""Boot Debian's kernel in a QEMU guest over this machine's own root (virtme-ng) and run one shell script in it.

The Linux kernel initiator (iscsi_tcp, dm-multipath) needs kernel modules this machine may not load; a guest can.
`run_script` boots `linux-image-amd64`'s kernel with virtme-ng (`vng`, PyPI `virtme-ng`), the host's root shared
read-only over 9p (`--force-9p`: Debian 12's QEMU ships the old virtiofsd) with writable tmpfs overlays on /etc,
/tmp, /var, and runs a bash script as root; it returns the script's output, its exit status and the wall time.
Used by tests/e2e/test_kernel_initiator.py and perf/bench.py's `kernel` suite.

KVM is used when it can run this kernel (probed once per process with a trivial boot); otherwise QEMU's TCG
emulates the CPU (a paravirtual /dev/kvm that cannot run an unmodified kernel fails at once, so the probe costs
under a second). The guest's stdout and stderr stay on pipes: QEMU reopens /proc/self/fd/1 and 2 with O_TRUNC, so
a shared file would be truncated under us.

The root 9p export is mounted without a cache, which makes Python's imports (thousands of stat calls) slow under
TCG; a second read-only export of / is mounted with cache=loose and bind-mounted over /usr and the directories that
hold this checkout and its venv, so `ringtgt serve` starts in the guest about twice as fast.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATUS_MARK = "ringtgt-guest-status="
CACHED_TAG = "ringtgt-root"
KVM_PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class GuestResult:
    status: int | None          # the script's exit status; None: the guest died or the deadline passed first
    output: str                 # the script's stdout and stderr, in order (the guest console merges them)
    seconds: float              # wall time from `vng` start to its exit, boot included
    accel: str                  # "kvm" or "tcg"


def kernel_image() -> Path:
    """The newest readable /boot/vmlinuz-* (Debian's linux-image-amd64 puts it there)."""
    images = sorted((p for p in Path("/boot").glob("vmlinuz-*") if os.access(p, os.R_OK)),
                    key=lambda p: [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", p.name)])
    if not images:
        raise RuntimeError("no readable /boot/vmlinuz-*: install linux-image-amd64 (`make test` does, as root)")
    return images[-1]


def vng_binary() -> str:
    """`vng` beside this Python (the venv's, from the test extra), else on PATH."""
    beside = Path(sys.executable).parent / "vng"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("vng")
    if found is None:
        raise RuntimeError("vng not found: install the test extra (pip install -e '.[test]' installs virtme-ng)")
    return found


def _environment() -> dict[str, str]:
    # vng starts virtme-run through the shell: the venv's bin must be on PATH
    return dict(os.environ, PATH=f"{Path(vng_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def _vng_command(script_path: Path, *, cpus: int, memory: str, kvm: bool) -> list[str]:
    command = [vng_binary(), "--run", str(kernel_image()), "--force-9p", "--cpus", str(cpus), "--memory", memory,
               f"--qemu-opts=-fsdev local,id=ringtgtfs,path=/,security_model=none,readonly=on "
               f"-device virtio-9p-pci,fsdev=ringtgtfs,mount_tag={CACHED_TAG}",
               "--exec", f"bash {script_path}"]
    return command if kvm else command[:1] + ["--disable-kvm"] + command[1:]


def _top_dirs() -> list[str]:
    """/usr and the top-level directories of this checkout and of the Python that runs us (the venv)."""
    tops = {"/usr"}
    for path in (REPO, Path(sys.prefix), Path(sys.executable).resolve()):
        parts = path.resolve().parts
        if len(parts) > 1 and parts[1] not in ("proc", "sys", "dev", "run", "tmp", "etc", "var"):
            tops.add("/" + parts[1])
    return sorted(tops)


def _prologue() -> str:
    binds = " ".join(_top_dirs())
    return (f"mkdir -p /run/ringtgt-hostroot\n"
            f"if mount -t 9p -o ro,trans=virtio,version=9p2000.L,access=any,msize=512000,cache=loose "
            f"{CACHED_TAG} /run/ringtgt-hostroot; then\n"
            f"    for d in {binds}; do mount --bind /run/ringtgt-hostroot$d $d; done\n"
            f"fi\n"
            f"cd /\n")


def _run(command: list[str], timeout: float, log: Path | None = None) -> tuple[int | None, str, float]:
    """Run `vng` in a session of its own, output on a pipe (copied line by line to `log` when given, to watch a
    long run); past the deadline kill the session, QEMU with it."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_environment(), start_new_session=True)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        os.killpg(proc.pid, signal.SIGKILL)
    timer = threading.Timer(timeout, kill)
    timer.start()
    lines = []
    try:
        with open(log if log is not None else os.devnull, "wb") as copy:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                copy.write(line)
                copy.flush()
        proc.wait()
    finally:
        timer.cancel()
    returncode = None if expired.is_set() else proc.returncode
    return returncode, b"".join(lines).decode(errors="replace"), time.monotonic() - start


@functools.cache
def kvm_usable() -> bool:
    """True when QEMU with KVM boots this kernel and runs a command (a trivial boot, once per process)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="ringtgt-guest-") as tmp:
        probe = Path(tmp) / "probe.sh"
        probe.write_text(f"echo {STATUS_MARK}0\n")
        probe.chmod(0o644)
        _, out, _ = _run(_vng_command(probe, cpus=1, memory="256M", kvm=True), KVM_PROBE_TIMEOUT)
    return f"{STATUS_MARK}0" in out


def run_script(script: str, *, timeout: float, cpus: int = 2, memory: str = "2G",
               log: Path | None = None) -> GuestResult:
    """Boot a guest, run `script` with bash as root in it, power off. `timeout` bounds the whole run, boot
    included; the status is the script's own (an exit anywhere in it counts), read from a last marker line.
    `log`: a file that receives the output as it comes."""
    kvm = kvm_usable()
    with tempfile.TemporaryDirectory(prefix="ringtgt-guest-") as tmp:
        body = Path(tmp) / "body.sh"
        body.write_text(script)
        wrapper = Path(tmp) / "run.sh"
        wrapper.write_text(f"{_prologue()}bash {body}\necho {STATUS_MARK}$?\n")
        for path in (Path(tmp), body, wrapper):     # the guest's root is the host's; it reads these as root
            path.chmod(0o755)
        _, out, seconds = _run(_vng_command(wrapper, cpus=cpus, memory=memory, kvm=kvm), timeout, log)
    found = re.findall(rf"^{STATUS_MARK}(\d+)\r?$", out, re.MULTILINE)
    output = re.sub(rf"^{STATUS_MARK}\d+\r?\n?", "", out, flags=re.MULTILINE)
    return GuestResult(int(found[-1]) if found else None, output, seconds, "kvm" if kvm else "tcg")
