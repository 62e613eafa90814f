"""Statistics of a running `ringtgt serve`: the Prometheus endpoint scraped over HTTP while fio (libiscsi) runs and
parsed with prometheus_client's parser, its totals against fio's once fio is done, `ringtgt stats --json` against
the scrape, a sense-key error counted, and a killed worker's counts kept by its LUN (the restarted worker adopts
its counter file)."""
import json
import os
import signal
import urllib.request

import initiator as I
from harness import FioRun, Lun, free_port, poll, ringtgt_binary, run, session, worker_of, write_fio_job
from prometheus_client.parser import text_string_to_metric_families

NAME = "iqn.2026-11.org.ringtgt:metrics"
BLOCK = 512
IODEPTH = 8
BS = 4096
FIO_SECONDS = 20


def metrics_server(ringtgt, **kwargs):
    port = free_port()
    tgt = ringtgt(server_extra=f'metrics = "127.0.0.1:{port}"', **kwargs)
    tgt.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return tgt


def scrape(tgt) -> dict:
    """{(sample name, sorted labels): value} of one scrape, through prometheus_client's own parser."""
    with urllib.request.urlopen(tgt.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def lun_value(samples: dict, name: str, tgt, **labels) -> float:
    return samples[name, tuple(sorted({"target": tgt.iqn, "lun": "0", **labels}.items()))]


def stats_json(tgt) -> dict:
    return json.loads(run([ringtgt_binary(), "stats", "--config", str(tgt.config), "--json"],
                          merge_stderr=False).stdout)


def fio_report(path) -> dict:
    text = path.read_text()
    return json.loads(text[text.index("{"):])


def test_scrapes_while_fio_runs_and_totals_agree_with_fio(ringtgt, tmp_path):
    tgt = metrics_server(ringtgt, workers=2, luns=[Lun(0, "64MiB")])
    # fio ends by itself after FIO_SECONDS (no signal: how fio answers one differs from run to run), a hundred
    # times the 0.2 s between the scrapes that must see its reads grow (counters are published four times a second);
    # at a rate that leaves the machine's CPUs to the coordinator too (unbounded, fio and the workers starve its
    # endpoint on a loaded 2-core machine: one scrape took the whole run).
    job = write_fio_job(tmp_path / "mixed.fio", tgt.url(0), rw="randrw", bs=BS, iodepth=IODEPTH, size="32MiB",
                        runtime=FIO_SECONDS, time_based=1, numjobs=2, rate_iops=500,
                        initiator="iqn.2026-11.org.ringtgt:fio")
    report = tmp_path / "fio.json"
    scrapes = []

    def reads_seen_growing():
        """Scrape; true once scrapes saw three different read byte counts (fio is running)."""
        assert fio.proc.poll() is None, f"fio ended before three scrapes saw its reads grow: {scrapes}"
        scrapes.append(lun_value(scrape(tgt), "ringtgt_lun_read_bytes_total", tgt))
        return len({value for value in scrapes if value > 0}) >= 3
    with FioRun(job, tmp_path / "fio.out", "--output-format=json", f"--output={report}") as fio:
        poll(reads_seen_growing, timeout=FIO_SECONDS + 60, interval=0.2, what="scrapes to see fio's reads counted")
        assert fio.wait(timeout=FIO_SECONDS + 60) == 0, fio.text()
    assert scrapes == sorted(scrapes)           # a counter only grows
    jobs = fio_report(report)["jobs"]
    assert [j["error"] for j in jobs] == [0, 0], report.read_text()
    read_bytes = sum(j["read"]["io_bytes"] for j in jobs)
    write_bytes = sum(j["write"]["io_bytes"] for j in jobs)
    reads, writes = sum(j["read"]["total_ios"] for j in jobs), sum(j["write"]["total_ios"] for j in jobs)
    print(f"{len(scrapes)} scrapes during fio; fio read {read_bytes} B in {reads} commands, wrote {write_bytes} B "
          f"in {writes}")
    in_flight = 2 * IODEPTH * BS             # numjobs x iodepth: what fio may not have counted at its end

    def settled():
        samples = scrape(tgt)
        return lun_value(samples, "ringtgt_lun_read_bytes_total", tgt) >= read_bytes \
            and lun_value(samples, "ringtgt_lun_write_bytes_total", tgt) >= write_bytes and samples
    samples = poll(settled, timeout=10, what="the counters to reach fio's totals")
    counted_read = lun_value(samples, "ringtgt_lun_read_bytes_total", tgt)
    counted_write = lun_value(samples, "ringtgt_lun_write_bytes_total", tgt)
    print(f"counted: read {counted_read:.0f} B, written {counted_write:.0f} B")
    assert read_bytes <= counted_read <= read_bytes + in_flight
    assert write_bytes <= counted_write <= write_bytes + in_flight
    commands = {kind: lun_value(samples, "ringtgt_lun_commands_total", tgt, kind=kind) for kind in ("read", "write")}
    assert reads <= commands["read"] <= reads + 2 * IODEPTH and writes <= commands["write"] <= writes + 2 * IODEPTH
    for kind in ("read", "write", "other"):      # the histogram counts every command once
        assert lun_value(samples, "ringtgt_lun_latency_seconds_count", tgt, kind=kind) == \
            lun_value(samples, "ringtgt_lun_commands_total", tgt, kind=kind)
        assert lun_value(samples, "ringtgt_lun_latency_seconds_bucket", tgt, kind=kind, le="+Inf") == \
            lun_value(samples, "ringtgt_lun_commands_total", tgt, kind=kind)
    mean = lun_value(samples, "ringtgt_lun_latency_seconds_sum", tgt, kind="read") / commands["read"]
    print(f"mean read service time in the target: {mean * 1e6:.1f} µs")
    assert 0 < mean < 1
    workers = {labels: value for (name, labels), value in samples.items() if name == "ringtgt_worker_restarts_total"}
    assert sorted(workers) == [(("worker", "0"),), (("worker", "1"),)] and set(workers.values()) == {0}
    assert sum(value for (name, labels), value in samples.items()
               if name == "ringtgt_worker_cpu_seconds_total") > 0

    stats = stats_json(tgt)
    lun, = stats["luns"]
    print(f"ringtgt stats --json: {json.dumps(lun)}")
    assert (lun["read_bytes"], lun["write_bytes"]) == (counted_read, counted_write)
    errors = {dict(labels)["sense_key"]: value for (name, labels), value in samples.items()
              if name == "ringtgt_lun_errors_total" and value}
    assert lun["commands"]["read"] == commands["read"] and lun["errors"] == errors
    assert set(errors) <= {"unit_attention"}         # a fresh session's first command may get one
    assert stats["sessions"] == [] and [w["index"] for w in stats["workers"]] == [0, 1]


def session_value(samples: dict, name: str, initiator: str) -> float | None:
    values = [value for (sample, labels), value in samples.items()
              if sample == name and dict(labels).get("initiator") == initiator]
    return sum(values) if values else None


def test_a_read_past_the_end_counts_as_an_illegal_request(ringtgt):
    tgt = metrics_server(ringtgt, workers=1, luns=[Lun(0, "8MiB")])
    with session(tgt, NAME) as ini:
        result = ini.read(tgt.luns[0].blocks, 1, block_size=BLOCK)
        assert result.status == I.CHECK_CONDITION and result.sense.key == 0x05

        def counted():
            samples = scrape(tgt)
            return lun_value(samples, "ringtgt_lun_errors_total", tgt, sense_key="illegal_request") == 1 and samples
        samples = poll(counted, timeout=10, what="the ILLEGAL REQUEST in the LUN's errors")
        errors = {dict(labels)["sense_key"]: value for (name, labels), value in samples.items()
                  if name == "ringtgt_session_errors_total" and dict(labels)["initiator"] == NAME and value}
        print(f"the session's errors: {errors}")
        assert errors["illegal_request"] == 1
        assert lun_value(samples, "ringtgt_lun_read_bytes_total", tgt) == 0       # a failed read moves no bytes
        stats = stats_json(tgt)
        assert stats["luns"][0]["errors"]["illegal_request"] == 1
        assert [s["initiator"] for s in stats["sessions"]] == [NAME]
        table = run([ringtgt_binary(), "stats", "--config", str(tgt.config)], merge_stderr=False).stdout
        print(table)
        rows = [row.split() for row in table.splitlines() if row]
        assert ["LUN", "IOPS", "READ", "MiB/s", "WRITE", "MiB/s", "P50", "µs", "P99", "µs", "ERRORS"] in rows
        lun_row, = [row for row in rows if row[:2] == [tgt.iqn, "0"]]
        session_row, = [row for row in rows if row[0] == NAME]
        assert "illegal_request=1" in lun_row[-1] and "illegal_request=1" in session_row[-1]


def test_a_killed_worker_s_counts_stay_with_its_lun_and_its_sessions_go(ringtgt):
    tgt = metrics_server(ringtgt, workers=2, luns=[Lun(0, "8MiB")])
    with session(tgt, NAME) as ini:
        victim = worker_of(tgt, ini.sock)
        for lba in range(16):
            assert ini.read(lba * 8, 8, block_size=BLOCK).status == I.GOOD
        samples = poll(lambda: (s := scrape(tgt)) and lun_value(s, "ringtgt_lun_read_bytes_total", tgt) == 16 * 4096
                       and s, timeout=10, what="the 16 reads counted")
        assert session_value(samples, "ringtgt_session_read_bytes_total", NAME) == 16 * 4096
        index = str(next(w["index"] for w in stats_json(tgt)["workers"] if w["pid"] == victim))
        os.kill(victim, signal.SIGKILL)
        after = poll(lambda: (s := scrape(tgt))[("ringtgt_worker_restarts_total", (("worker", index),))] == 1
                     and s, timeout=30, what=f"worker {index} restarted and its counter file adopted")
    print(f"worker {index} (pid {victim}) killed: LUN read bytes "
          f"{lun_value(after, 'ringtgt_lun_read_bytes_total', tgt):.0f}, restarts 1")
    assert lun_value(after, "ringtgt_lun_read_bytes_total", tgt) == 16 * 4096      # kept by the LUN
    assert lun_value(after, "ringtgt_lun_commands_total", tgt, kind="read") == 16
    assert session_value(after, "ringtgt_session_read_bytes_total", NAME) is None  # the session died with it
