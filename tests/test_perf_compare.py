"""perf/compare.py, the regression check of a perf lab: worse beyond the threshold fails, better passes."""
import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("compare", Path(__file__).parents[1] / "perf" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def result(iops, p99, cpu, ratio_iops):
    cells = {"iops": iops, "mib_s": iops / 256, "p50_us": 100.0, "p99_us": p99, "cpu_s_per_gib": cpu}
    ratio = {"iops": ratio_iops, "mib_s": ratio_iops, "p50_us": 1.0, "p99_us": 1.0, "cpu_s_per_gib": 1.0}
    return {"file": {"randread-4k-qd32": {"ringtgt": cells, "tgtd": cells, "ratio": ratio, "runs": {}}}}


def run(tmp_path, old, new, *args):
    a, b = tmp_path / "old.json", tmp_path / "new.json"
    a.write_text(json.dumps(old))
    b.write_text(json.dumps(new))
    return compare.main([str(a), str(b), *args])


def test_unchanged_or_better_passes(tmp_path, capsys):
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(52000, 850, 3.9, 1.6)) == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_fewer_iops_more_latency_or_cpu_fail(tmp_path, capsys):
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(45000, 900, 4.0, 1.5)) == 1
    assert "REGRESSION file    randread-4k-qd32   ringtgt    iops" in capsys.readouterr().out
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(50000, 1000, 4.0, 1.5)) == 1
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(50000, 900, 4.5, 1.5)) == 1
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(50000, 900, 4.0, 1.3)) == 1


def test_threshold_is_honoured(tmp_path):
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(46000, 900, 4.0, 1.5), "--threshold", "10%") == 0
    assert run(tmp_path, result(50000, 900, 4.0, 1.5), result(46000, 900, 4.0, 1.5), "--threshold", "5%") == 1


def test_nothing_in_common_is_an_error(tmp_path):
    assert run(tmp_path, {"machine": {}}, result(1, 1, 1, 1)) == 2
