"""The counters of target/metrics: the bucket table against the bounds, quantiles, a connection's commands counted
into a real counter file and read back (per LUN, per session, errors by sense key), a session's end folded into its
LUN, a restarted worker adopting the file, and the Prometheus collector's output parsed by prometheus_client."""
import select
import socket
import struct
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from target.iscsi import pdu as P
from target.iscsi.connection import Connection
from target.config import loads_config
from target.metrics import layout as L
from target.metrics.counters import WorkerCounters, kind_of
from target.metrics import prometheus
from target.metrics.prometheus import CounterFilesCollector
from target.metrics.report import format_stats, stats_dict
from target.metrics.snapshot import Snapshot, interval, quantile, read_node
from target.running_config import save_running
from tests.iscsi_helpers import data_out, login_request, scsi_command
from tests.iscsi_host import INI, IQN, Host, exchange

ARRIVED = 1_000_000
SERVICE_NS = 5_000                      # 5 µs: bucket 3 (4.096 .. 8.192 µs)


def test_each_bucket_holds_the_times_between_its_bounds():
    bounds = L.bucket_bounds()
    for ns in (0, 1, 1023, 1024, 1025, 4095, 4096, 5000, 10**6, 2**34 - 1, 2**34, 10**12, 2**63):
        bucket = L.BUCKET_OF[ns.bit_length()]
        assert ns / 1e9 < bounds[bucket], ns
        assert bucket == 0 or ns / 1e9 >= bounds[bucket - 1], ns
    assert bounds[-1] == float("inf") and len(bounds) == L.BUCKETS


def test_quantiles_interpolate_within_a_bucket():
    histogram = [0] * L.BUCKETS
    histogram[3] = 100                  # 100 commands between 4.096 and 8.192 µs
    assert quantile(0.5, histogram) == pytest.approx(6.144e-6)
    assert quantile(0.99, histogram) == pytest.approx(4.096e-6 + 4.096e-6 * 0.99)
    histogram[L.BUCKETS - 1] = 100      # and 100 beyond the last bound: their lower bound
    assert quantile(0.99, histogram) == pytest.approx(2**34 / 1e9)
    assert quantile(0.5, [0] * L.BUCKETS) is None


def test_count_adds_to_the_offsets_it_writes_as_literals():
    assert (L.KIND_BYTES, L.KIND_SUM) == (0, 1)


def test_the_interval_is_the_workers_time_between_their_publishes():
    def reading(taken, published):
        return Snapshot(taken, {}, {}, {i: {"published": int(p * 1e9)} for i, p in enumerate(published)})
    assert interval(reading(11.0, [10.9, 10.75]), reading(10.0, [9.8, 9.75])) == pytest.approx(1.05)
    assert interval(reading(11.0, [5.0]), reading(10.0, [5.0])) == pytest.approx(1.0)     # nothing published


def test_kinds_of_opcodes():
    assert [kind_of(op) for op in (0x28, 0x88, 0x2A, 0x8A, 0x2E, 0x12, 0x89)] == \
        ["read", "read", "write", "write", "write", "other", "other"]


def logged_in() -> Connection:
    conn = Connection(Host(), ("127.0.0.1", 3260), ("127.0.0.1", 5000))
    conn.receive_data(login_request([("InitiatorName", INI), ("TargetName", IQN), ("InitialR2T", "Yes")]))
    (pdu, _), = exchange(conn)
    assert pdu.opcode == P.LOGIN_RESPONSE and pdu.login_status == 0
    return conn


def cdb10(opcode, lba, blocks):
    return bytes([opcode, 0]) + struct.pack(">IxH", lba, blocks) + b"\0"


def counted_session(counters):
    """A logged-in connection that ran a 4 KiB read, a 1 KiB write (R2T) and an unsupported command; its
    output sent SERVICE_NS after the commands arrived and counted."""
    conn = logged_in()
    finished = []

    def run(raw):
        conn.receive_data(raw, ARRIVED)
        out = conn.take_output()
        finished.extend(conn.output_sent())
        return out

    run(scsi_command(cdb10(0x28, 0, 8), edtl=4096, read=True, cmd_sn=1))
    r2t, = exchange(conn, scsi_command(cdb10(0x2A, 0, 2), edtl=1024, write=True, cmd_sn=2))
    run(data_out(b"\xaa" * 1024, ttt=r2t[0].ttt))
    run(scsi_command(b"\x99" + bytes(15), cmd_sn=3))          # CHECK CONDITION, ILLEGAL REQUEST
    assert [command.sent for command in finished] == [4096, 1024, -1]
    counters.count(conn, finished, ARRIVED + SERVICE_NS)
    return conn


def test_a_connection_s_commands_are_counted_per_lun_and_per_session(tmp_path):
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    conn = counted_session(counters)
    counters.publish(1, 1, 0)
    snapshot = read_node(str(tmp_path))
    lun = snapshot.luns[IQN, 0]
    assert [lun.commands(kind) for kind in range(3)] == [1, 1, 1]
    assert (lun.bytes(L.READ), lun.bytes(L.WRITE)) == (4096, 1024)
    assert lun.errors() == {"illegal_request": 1}
    assert lun.histogram(L.READ)[3] == 1 and lun.latency_sum_ns(L.READ) == SERVICE_NS
    (key, (client, session)), = snapshot.sessions.items()
    assert key == (IQN, INI, f"0x{0x23D000000001:012x}", "7") and client == "127.0.0.1:5000"
    assert session.words == lun.words
    assert snapshot.workers[0] == {**snapshot.workers[0], "connections": 1, "sessions": 1, "restarts": 0}

    counters.session_ended(conn)        # its counts stay with the LUN
    counters.publish(0, 0, 0)
    after = read_node(str(tmp_path))
    assert after.sessions == {} and after.luns[IQN, 0].words == lun.words
    stats = stats_dict(after, snapshot)
    assert stats["luns"][0]["commands"] == {"read": 1, "write": 1, "other": 1}
    assert stats["luns"][0]["interval"]["iops"] == 0.0
    print(format_stats(stats))
    counters.close()


def test_a_worker_a_reload_dropped_counts_for_its_luns_only(tmp_path):
    dropped = WorkerCounters(str(tmp_path), 1, "supervisor-1", [(IQN, 0)])
    counted_session(dropped)
    dropped.publish(1, 1, 0)
    dropped.close()                     # stopped by a reload to workers = 1, with its session's counts
    kept = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    kept.publish(0, 0, 0)
    assert sorted(read_node(str(tmp_path)).workers) == [0, 1]       # no running configuration: every file
    save_running(loads_config(f'[server]\nworkers = 1\nstate_dir = "{tmp_path}"\n[[target]]\niqn = "{IQN}"\n'
                              '[[target.lun]]\nid = 0\nbackstore = "null"\nsize = 4096\n'))
    snapshot = read_node(str(tmp_path))
    assert sorted(snapshot.workers) == [0] and snapshot.sessions == {}
    assert snapshot.luns[IQN, 0].bytes(L.READ) == 4096 and snapshot.luns[IQN, 0].commands(L.WRITE) == 1
    kept.close()


def test_each_command_is_counted_once_whatever_the_batches(tmp_path):
    """Batches taken with nothing answered in them, sent later than the next ones are taken: still once each."""
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    conn = logged_in()
    conn.take_output()                              # an empty batch (nothing answered yet)
    conn.receive_data(scsi_command(cdb10(0x28, 0, 1), edtl=512, read=True, cmd_sn=1), ARRIVED)
    conn.take_output()
    conn.receive_data(scsi_command(cdb10(0x28, 1, 1), edtl=512, read=True, cmd_sn=2), ARRIVED)
    conn.take_output()
    for _ in range(3):
        counters.count(conn, conn.output_sent(), ARRIVED + SERVICE_NS)
    counters.publish(1, 1, 0)
    assert read_node(str(tmp_path)).luns[IQN, 0].commands(L.READ) == 2
    counters.close()


def test_a_restarted_worker_folds_the_dead_one_s_sessions_into_its_luns(tmp_path):
    counters = WorkerCounters(str(tmp_path), 1, "supervisor-1", [(IQN, 0)])
    counted_session(counters)
    counters.publish(1, 1, 0)
    counters.close()                    # dies with the session still logged in

    restarted = WorkerCounters(str(tmp_path), 1, "supervisor-1", [(IQN, 0)])
    snapshot = read_node(str(tmp_path))
    assert snapshot.sessions == {} and snapshot.workers[1]["restarts"] == 1
    assert snapshot.luns[IQN, 0].bytes(L.READ) == 4096
    restarted.close()

    fresh = WorkerCounters(str(tmp_path), 1, "supervisor-2", [(IQN, 0)])    # a new `serve`: from zero
    snapshot = read_node(str(tmp_path))
    assert snapshot.luns[IQN, 0].bytes(L.READ) == 0 and snapshot.workers[1]["restarts"] == 0
    fresh.close()


def test_a_full_slot_table_counts_for_the_lun_only(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "MAX_SLOTS", 1)          # the LUN's own slot takes it
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    conn = counted_session(counters)
    counters.publish(1, 1, 0)
    snapshot = read_node(str(tmp_path))
    assert snapshot.sessions == {} and snapshot.luns[IQN, 0].bytes(L.READ) == 4096
    counters.session_ended(conn)
    counters.publish(0, 0, 0)
    assert read_node(str(tmp_path)).luns[IQN, 0].bytes(L.READ) == 4096
    counters.close()


def test_the_collector_s_exposition_parses_with_prometheus_client(tmp_path):
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    counted_session(counters)
    counters.publish(1, 1, 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CounterFilesCollector(str(tmp_path)))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    lun = (("lun", "0"), ("target", IQN))
    assert samples["ringtgt_lun_read_bytes_total", lun] == 4096
    assert samples["ringtgt_lun_write_bytes_total", lun] == 1024
    assert samples["ringtgt_lun_commands_total", (("kind", "read"), *lun)] == 1
    assert samples["ringtgt_lun_errors_total", (("lun", "0"), ("sense_key", "illegal_request"), ("target", IQN))] == 1
    assert samples["ringtgt_lun_latency_seconds_bucket", (("kind", "read"), ("le", "4.096e-06"), *lun)] == 0
    assert samples["ringtgt_lun_latency_seconds_bucket", (("kind", "read"), ("le", "8.192e-06"), *lun)] == 1
    assert samples["ringtgt_lun_latency_seconds_sum", (("kind", "read"), *lun)] == pytest.approx(SERVICE_NS / 1e9)
    session = (("client", "127.0.0.1:5000"), ("initiator", INI), ("isid", "0x23d000000001"), ("target", IQN),
               ("tsih", "7"))
    assert samples["ringtgt_session_read_bytes_total", session] == 4096
    assert samples["ringtgt_worker_connections", (("worker", "0"),)] == 1
    assert samples["ringtgt_worker_cpu_seconds_total", (("mode", "user"), ("worker", "0"))] > 0
    counters.close()


def test_commands_to_a_lun_the_target_lacks_are_not_counted(tmp_path):
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [(IQN, 0)])
    conn = logged_in()
    conn.receive_data(scsi_command(cdb10(0x28, 0, 1), edtl=512, read=True, lun=3), ARRIVED)
    conn.take_output()
    counters.count(conn, conn.output_sent(), ARRIVED + SERVICE_NS)
    counters.publish(1, 1, 0)
    snapshot = read_node(str(tmp_path))
    assert snapshot.sessions == {} and list(snapshot.luns) == [(IQN, 0)]
    assert sum(snapshot.luns[IQN, 0].words[L.S_KINDS:]) == 0
    counters.close()


def test_a_lun_added_while_the_worker_runs_is_counted_and_keeps_its_counts(tmp_path):
    counters = WorkerCounters(str(tmp_path), 0, "supervisor-1", [])     # LUN 0 came after the worker started
    conn = counted_session(counters)
    counters.session_ended(conn)
    counters.publish(0, 0, 0)
    snapshot = read_node(str(tmp_path))
    assert snapshot.sessions == {} and snapshot.luns[IQN, 0].bytes(L.READ) == 4096
    counters.close()


def test_a_label_always_splits_into_its_fields_whatever_name_the_initiator_sends():
    """A tab or a 1000-byte InitiatorName must not break every reader of the counter file (stats, scrapes, a
    restarted worker adopting it)."""
    name = "iqn.2026-11.org.example:\there" + "x" * 1000
    raw = L.encode_label("iqn.2026-11.org.ringtgt:t", 3, (name, "0x1", "7", "127.0.0.1:5000"))
    assert len(raw) <= L.LABEL_BYTES
    target, lun, session = L.decode_label(raw + bytes(L.LABEL_BYTES - len(raw)))
    assert (target, lun) == ("iqn.2026-11.org.ringtgt:t", 3)
    assert session is not None and session[1:] == ("0x1", "7", "127.0.0.1:5000")
    assert session[0].startswith("iqn.2026-11.org.example: here") and "\t" not in session[0]


def test_a_scraper_trickling_its_request_is_cut_at_the_deadline(tmp_path, monkeypatch):
    """Each read has a timeout, but a byte every 0.2 s never trips it: the request as a whole has a deadline."""
    monkeypatch.setattr(prometheus, "REQUEST_TIMEOUT", 1.0)
    server = prometheus.MetricsServer(("127.0.0.1", 0), str(tmp_path))
    try:
        port = server.httpd.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            started = time.monotonic()
            closed = False
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200:
                try:
                    slow.send(bytes([byte]))
                except OSError:                 # reset: cut
                    closed = True
                    break
                readable, _, _ = select.select([slow], [], [], 0.2)
                if readable and slow.recv(1024) == b"":
                    closed = True
                    break
            elapsed = time.monotonic() - started
        print(f"trickling scraper cut after {elapsed:.1f} s")
        assert closed and elapsed < 10
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200                     # the endpoint serves the next scrape
    finally:
        server.close()
