"""The Prometheus endpoint (`[server] metrics = "host:port"`): a prometheus_client Collector over the counter files
(snapshot.py), read at each scrape, served over HTTP by the coordinator process from a thread of its own, one
request at a time, each cut at REQUEST_TIMEOUT in all, so a scraper can hold no more than one thread, and not for long.

    ringtgt_lun_read_bytes_total, ringtgt_lun_write_bytes_total           {target, lun}
    ringtgt_lun_commands_total                                            {target, lun, kind}
    ringtgt_lun_errors_total                                              {target, lun, sense_key}
    ringtgt_lun_latency_seconds (histogram: service time, arrival to response sent)   {target, lun, kind}
    ringtgt_session_* the same per session                {target, initiator, isid, tsih, client}
    ringtgt_worker_connections, _sessions, _commands_in_flight (gauges), ringtgt_worker_cpu_seconds_total {mode},
    ringtgt_worker_restarts_total, ringtgt_worker_start_time_seconds      {worker}

Counters carry their since-when as `_created` (OpenMetrics).
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator import procinfo

from . import layout as L
from .snapshot import Totals, read_node

log = logging.getLogger(f"ringtgt.{__name__}")

REQUEST_TIMEOUT = 5.0
LUN_LABELS = ["target", "lun"]
SESSION_LABELS = ["target", "initiator", "isid", "tsih", "client"]
BUCKET_LABELS = [f"{bound:.9g}" if bound != float("inf") else "+Inf" for bound in L.bucket_bounds()]


class _Families:
    """One scope's metric families (lun or session), filled one Totals at a time."""

    def __init__(self, scope: str, labels: list[str]) -> None:
        what = f"of each {'LUN' if scope == 'lun' else 'iSCSI session'}"
        self.read_bytes = CounterMetricFamily(f"ringtgt_{scope}_read_bytes", f"Bytes read by READ commands {what}",
                                              labels=labels)
        self.write_bytes = CounterMetricFamily(f"ringtgt_{scope}_write_bytes",
                                               f"Bytes written by WRITE commands {what}", labels=labels)
        self.commands = CounterMetricFamily(f"ringtgt_{scope}_commands", f"SCSI commands answered {what}",
                                            labels=labels + ["kind"])
        self.errors = CounterMetricFamily(f"ringtgt_{scope}_errors", f"Commands that failed {what}, by sense key "
                                          "(none: a status without sense data)", labels=labels + ["sense_key"])
        self.latency = HistogramMetricFamily(f"ringtgt_{scope}_latency_seconds", "Service time in the target "
                                             f"(command arrival to response sent) {what}", labels=labels + ["kind"])

    def add(self, labels: list[str], totals: Totals) -> None:
        created = totals.since / 1e9 or None
        self.read_bytes.add_metric(labels, totals.bytes(L.READ), created=created)
        self.write_bytes.add_metric(labels, totals.bytes(L.WRITE), created=created)
        for i, kind in enumerate(L.KINDS):
            histogram = totals.histogram(i)
            self.commands.add_metric(labels + [kind], sum(histogram), created=created)
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKET_LABELS, histogram):
                cumulative += count
                buckets.append((bound, cumulative))
            self.latency.add_metric(labels + [kind], buckets, totals.latency_sum_ns(i) / 1e9)
        for i, key in enumerate(L.SENSE_KEYS):
            self.errors.add_metric(labels + [key], totals.words[L.S_ERRORS + i], created=created)

    def __iter__(self) -> Iterator[Metric]:
        return iter((self.read_bytes, self.write_bytes, self.commands, self.errors, self.latency))


class CounterFilesCollector(Collector):
    """Everything under `<state_dir>/stats`, read afresh at each scrape."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def collect(self) -> Iterator[Metric]:
        snapshot = read_node(self.state_dir)
        luns = _Families("lun", LUN_LABELS)
        for (target, lun), totals in sorted(snapshot.luns.items()):
            luns.add([target, str(lun)], totals)
        sessions = _Families("session", SESSION_LABELS)
        for (target, initiator, isid, tsih), (client, totals) in sorted(snapshot.sessions.items()):
            sessions.add([target, initiator, isid, tsih, client], totals)
        yield from luns
        yield from sessions
        yield from _worker_families(snapshot.workers)


def _worker_families(workers: dict[int, dict[str, int]]) -> Iterator[Metric]:
    gauges = {key: GaugeMetricFamily(f"ringtgt_worker_{name}", text, labels=["worker"]) for key, name, text in (
        ("connections", "connections", "Connections the worker holds (logged in or logging in)"),
        ("sessions", "sessions", "Logged-in connections of the worker"),
        ("inflight", "commands_in_flight", "SCSI commands the worker has received and not yet answered"),
        ("started", "start_time_seconds", "When the worker's counters started (Unix time)"))}
    restarts = CounterMetricFamily("ringtgt_worker_restarts", "Restarts of the worker under this supervisor",
                                   labels=["worker"])
    cpu = CounterMetricFamily("ringtgt_worker_cpu_seconds", "CPU time of the worker's current process",
                              labels=["worker", "mode"])
    for index, worker in sorted(workers.items()):
        label = str(index)
        for key, family in gauges.items():
            family.add_metric([label], worker[key] / 1e9 if key == "started" else worker[key])
        restarts.add_metric([label], worker["restarts"])
        times = procinfo.cpu_seconds(worker["pid"])
        if times is not None:
            cpu.add_metric([label, "user"], times[0])
            cpu.add_metric([label, "system"], times[1])
    yield from gauges.values()
    yield restarts
    yield cpu


class _QuietHandler(WSGIRequestHandler):
    """One request, cut at REQUEST_TIMEOUT in all: the socket timeout bounds each read only, and a client trickling
    a byte at a time would otherwise hold the endpoint's one thread for good."""

    timeout = REQUEST_TIMEOUT

    def handle(self) -> None:
        deadline = threading.Timer(REQUEST_TIMEOUT, self._cut)
        deadline.daemon = True
        deadline.start()
        try:
            super().handle()
        finally:
            deadline.cancel()

    def _cut(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)      # the read or write in progress ends at once
        except OSError:
            pass

    def log_message(self, format, *args) -> None:       # noqa: A002   (the base class's name)
        pass


class MetricsServer:
    """The HTTP endpoint, in a daemon thread; `close()` stops it."""

    def __init__(self, address: tuple[str, int], state_dir: str) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(CounterFilesCollector(state_dir))
        host, port = address

        class Server(WSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            allow_reuse_address = True

        self.httpd = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_metrics(config) -> MetricsServer | None:
    """The endpoint of `[server] metrics`, if set; None (logged) if its address cannot be listened on."""
    address = config.server.metrics
    if address is None:
        return None
    try:
        server = MetricsServer(address, config.server.state_dir)
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d ([server] metrics): %s; no Prometheus endpoint", *address,
                  exc.strerror or exc)
        return None
    log.info("metrics: Prometheus endpoint on http://%s:%d/metrics", *address)
    return server
