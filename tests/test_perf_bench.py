"""perf/bench.py's tables (a column per server, ringtgt's ratio to each peer, > 1: ringtgt ahead) and CPU split."""
import importlib.util
import os
import sys
from pathlib import Path

PERF = Path(__file__).parents[1] / "perf"
sys.path.insert(0, str(PERF))          # bench.py imports its sibling servers.py
spec = importlib.util.spec_from_file_location("bench", PERF / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def cells(iops, cpu):
    return {"iops": iops, "mib_s": iops / 256, "p50_us": 100.0, "p99_us": 400.0, "cpu_s_per_gib": cpu * 262.144,
            "cpu_us_per_io": cpu, "wakeups_per_io": 0.5}


def test_a_table_of_three_servers_has_ratios_to_each_peer():
    names = ["ringtgt", "tgtd", "spdk"]
    row = {"ringtgt": cells(40000, 20.0), "tgtd": cells(20000, 40.0), "spdk": cells(50000, 16.0)}
    row["ratios"] = {p: {m: bench.ratio(m, row["ringtgt"][m], row[p][m]) for m in bench.METRICS} for p in names[1:]}
    lines = bench.format_table("t", {"randread-4k-qd32": row}, names).splitlines()
    head = [c.strip() for c in lines[2].strip("|").split("|")]
    values = dict(zip(head, (c.strip() for c in lines[4].strip("|").split("|"))))
    assert len(head) == 1 + 4 * 3 + 3 * 2 and lines[3] == "|" + "---|" * len(head)
    assert values["spdk IOPS"] == "50000" and values["ringtgt CPU µs/IO"] == "20.0"
    assert values["ratio IOPS /tgtd"] == "2.00" and values["ratio IOPS /spdk"] == "0.80"
    assert values["ratio CPU /tgtd"] == "2.00" and values["ratio CPU /spdk"] == "0.80"


def test_a_table_of_two_servers_keeps_plain_ratio_columns():
    row = {"workers=2": cells(30000, 20.0), "workers=1": cells(20000, 20.0)}
    row["ratios"] = {"workers=1": {m: bench.ratio(m, row["workers=2"][m], row["workers=1"][m]) for m in bench.METRICS}}
    head = bench.format_table("t", {"j": row}, ["workers=2", "workers=1"]).splitlines()[2]
    assert "| ratio IOPS | ratio p99 | ratio CPU |" in head


def test_the_servers_get_the_first_cpus_and_fio_the_rest_or_none_when_none_is_left():
    cpus = sorted(os.sched_getaffinity(0))
    assert bench.split_cpus(1) == (cpus[:1], cpus[1:])
    assert bench.split_cpus(len(cpus)) == (cpus, [])     # workers on every CPU: fio left where the scheduler puts it
