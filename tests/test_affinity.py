"""target/affinity.py in a process of its own (a pin is for good): threads started inside `unpinned()` get the CPUs
from before the pin, the calling thread keeps its pin, threads started outside inherit it."""
import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, os, threading
from target import affinity
cpus = os.sched_getaffinity(0)
affinity.pin(max(cpus))
seen = {}
def probe(name):
    t = threading.Thread(target=lambda: seen.__setitem__(name, os.sched_getaffinity(0)))
    t.start()
    t.join()
probe("pinned")
with affinity.unpinned():
    probe("unpinned")
print(json.dumps([sorted(cpus), sorted(seen["pinned"]), sorted(seen["unpinned"]), sorted(os.sched_getaffinity(0))]))
"""


def test_threads_started_unpinned_get_the_cpus_from_before_the_pin():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(root)), check=True).stdout
    cpus, pinned, unpinned, after = json.loads(out)
    assert pinned == [max(cpus)] and after == [max(cpus)], out
    assert unpinned == cpus, out


def test_unpinned_changes_nothing_in_a_process_never_pinned():
    from target import affinity
    before = os.sched_getaffinity(0)
    with affinity.unpinned():
        assert os.sched_getaffinity(0) == before
