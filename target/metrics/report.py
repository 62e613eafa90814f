"""What `ringtgt stats` prints: per LUN and per session, the totals and, over the interval between two readings
(snapshot.py), IOPS, MiB/s and the p50/p99 service time; per worker its gauges. As a dict (--json) or a table."""
from __future__ import annotations

import datetime

from . import layout as L
from .snapshot import Snapshot, Totals, interval, quantile

MIB = 1 << 20


def _rates(now: Totals, before: Totals | None, seconds: float) -> dict:
    """Totals since `since`, and over the interval: commands and bytes per second, p50/p99 µs of all kinds."""
    delta = now.minus(before) if before is not None else now
    merged = [sum(col) for col in zip(*(delta.histogram(kind) for kind in range(len(L.KINDS))))]
    p50, p99 = quantile(0.5, merged), quantile(0.99, merged)
    return {
        "since": datetime.datetime.fromtimestamp(now.since / 1e9, datetime.timezone.utc).isoformat(
            timespec="seconds") if now.since else None,
        "commands": {kind: now.commands(i) for i, kind in enumerate(L.KINDS)},
        "read_bytes": now.bytes(L.READ),
        "write_bytes": now.bytes(L.WRITE),
        "errors": now.errors(),
        "interval": {
            "seconds": round(seconds, 3),
            "iops": round(sum(merged) / seconds, 1) if seconds else None,
            "read_mib_s": round(delta.bytes(L.READ) / MIB / seconds, 2) if seconds else None,
            "write_mib_s": round(delta.bytes(L.WRITE) / MIB / seconds, 2) if seconds else None,
            "p50_us": round(p50 * 1e6, 1) if p50 is not None else None,
            "p99_us": round(p99 * 1e6, 1) if p99 is not None else None,
        },
    }


def stats_dict(now: Snapshot, before: Snapshot | None) -> dict:
    """The JSON of `ringtgt stats`: the interval's rates are over `before` -> `now` (without `before`: none)."""
    seconds = interval(now, before) if before is not None else 0.0
    luns = [{"target": target, "lun": lun, **_rates(totals, before.luns.get((target, lun)) if before else None,
                                                        seconds)}
            for (target, lun), totals in sorted(now.luns.items())]
    sessions = []
    for key, (client, totals) in sorted(now.sessions.items()):
        target, initiator, isid, tsih = key
        earlier = before.sessions[key][1] if before is not None and key in before.sessions else None
        sessions.append({"target": target, "initiator": initiator, "isid": isid, "tsih": int(tsih), "client": client,
                         **_rates(totals, earlier, seconds)})
    workers = [{"index": index, **{key: value for key, value in gauges.items() if key != "published"}}
               for index, gauges in sorted(now.workers.items())]
    return {"luns": luns, "sessions": sessions, "workers": workers}


COLUMNS = (("IOPS", "iops"), ("READ MiB/s", "read_mib_s"), ("WRITE MiB/s", "write_mib_s"), ("P50 µs", "p50_us"),
           ("P99 µs", "p99_us"))


def format_stats(stats: dict) -> str:
    """The table of `ringtgt stats`: LUNs, then sessions, with the interval's figures and the error counts."""
    lines = [f"interval {stats['luns'][0]['interval']['seconds'] if stats['luns'] else 0:g} s"]
    for title, records, name in (("LUN", stats["luns"], lambda r: f"{r['target']} {r['lun']}"),
                                 ("SESSION", stats["sessions"],
                                  lambda r: f"{r['initiator']} {r['isid']} -> {r['target']}")):
        rows = [[title] + [heading for heading, _ in COLUMNS] + ["ERRORS"]]
        for record in records:
            interval = record["interval"]
            errors = ",".join(f"{key}={n}" for key, n in record["errors"].items()) or "-"
            rows.append([name(record)] + ["-" if interval[key] is None else f"{interval[key]:g}" for _, key in COLUMNS]
                        + [errors])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
