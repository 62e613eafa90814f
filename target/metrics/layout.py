"""The layout of a worker's counter file, `<state_dir>/stats/worker-<index>.stats`: what the worker writes
(counters.py) and every reader reads (snapshot.py). Fixed-size, native-endian uint64 arrays; no message per I/O.

    header   HEADER_WORDS uint64: MAGIC, VERSION, seq (a seqlock: odd while the worker writes), slots in use,
             worker pid, started (wall clock ns), restarts, connections, sessions, commands in flight,
             published (monotonic ns of the last publish), the same in wall clock ns; then the supervisor's
             incarnation as text (INCARNATION_BYTES), so readers skip files of an earlier `serve`
    slots    MAX_SLOTS x SLOT_WORDS uint64: one per (LUN, session) pair, plus one per LUN for what sessions
             that ended counted (session "", a LUN's total on this worker is the sum of its slots)
    labels   MAX_SLOTS x LABEL_BYTES: "target\\tlun\\tinitiator\\tisid\\ttsih\\tclient" (UTF-8, NUL-padded)

A slot: state (FREE, LUN, SESSION), since (wall clock ns of its first count), then for each KIND its bytes,
its service time's sum (ns) and its histogram (BUCKETS counts, the command count is their sum), then ERRORS
counts: one per sense key, and one for a status without sense (RESERVATION CONFLICT, BUSY, TASK SET FULL).

The histogram's buckets are powers of two of nanoseconds: bucket 0 holds < 2^MIN_BIT ns (~1 µs), bucket i
< 2^(MIN_BIT+i) ns, the last everything from 2^(MIN_BIT+BUCKETS-2) ns (~17 s) on; the worker finds a bucket
from `int.bit_length()` through a table (BUCKET_OF), no search.
"""
from __future__ import annotations

MAGIC = 0x7374617473677472       # "rtgstats" read as a little-endian uint64
VERSION = 1

HEADER_WORDS = 32
H_MAGIC, H_VERSION, H_SEQ, H_USED, H_PID, H_STARTED, H_RESTARTS, H_CONNECTIONS, H_SESSIONS, H_INFLIGHT, \
    H_PUBLISHED, H_PUBLISHED_WALL = range(12)
INCARNATION_BYTES = 256
HEADER_BYTES = HEADER_WORDS * 8 + INCARNATION_BYTES

KINDS = ("read", "write", "other")
READ, WRITE, OTHER = range(3)
MIN_BIT = 10                     # bucket 0: below 1024 ns
BUCKETS = 26                     # up to 2^34 ns (17.2 s), then +Inf
KIND_BYTES, KIND_SUM, KIND_HIST = 0, 1, 2
KIND_WORDS = KIND_HIST + BUCKETS

SENSE_KEYS = ("no_sense", "recovered_error", "not_ready", "medium_error", "hardware_error", "illegal_request",
              "unit_attention", "data_protect", "blank_check", "vendor_specific", "copy_aborted",
              "aborted_command", "reserved", "volume_overflow", "miscompare", "completed", "none")
NO_SENSE_STATUS = 16             # a status other than GOOD without sense data

S_STATE, S_SINCE = 0, 1
S_KINDS = 2
S_ERRORS = S_KINDS + len(KINDS) * KIND_WORDS
SLOT_WORDS = S_ERRORS + len(SENSE_KEYS)
FREE, LUN, SESSION = 0, 1, 2

MAX_SLOTS = 4096
LABEL_BYTES = 512
SLOTS_OFFSET = HEADER_BYTES
SLOTS_WORD = SLOTS_OFFSET // 8
LABELS_OFFSET = SLOTS_OFFSET + MAX_SLOTS * SLOT_WORDS * 8
FILE_BYTES = LABELS_OFFSET + MAX_SLOTS * LABEL_BYTES

# int.bit_length() of a service time in ns -> its bucket
BUCKET_OF = tuple(min(max(bits - MIN_BIT, 0), BUCKETS - 1) for bits in range(65))


def bucket_bounds() -> list[float]:
    """Each bucket's upper bound in seconds (the last: infinity), in order."""
    return [(1 << (MIN_BIT + i)) / 1e9 for i in range(BUCKETS - 1)] + [float("inf")]


def file_name(index: int) -> str:
    return f"worker-{index}.stats"


def encode_label(target: str, lun: int, session: tuple[str, str, str, str] | None) -> bytes:
    """A slot's label: target, LUN and (initiator, isid, tsih, client) of a session, or empty fields for a LUN's
    slot; at most LABEL_BYTES. Every label splits into its six fields: a tab (the separator) in a field becomes a
    space, and the initiator's name, the one field a client chooses freely, gives way when the label is too long
    (a target's IQN is at most 223 bytes, the config says so; the other fields are short)."""
    fields = [_field(target), str(lun).encode(), *(_field(part) for part in session or ("", "", "", ""))]
    room = LABEL_BYTES - sum(map(len, fields)) - (len(fields) - 1)
    if room < 0:
        fields[2] = fields[2][:max(0, len(fields[2]) + room)]
    return b"\t".join(fields)[:LABEL_BYTES]


def _field(text: str) -> bytes:
    return text.encode(errors="replace").replace(b"\t", b" ")


def decode_label(raw: bytes) -> tuple[str, int, tuple[str, str, str, str] | None]:
    target, lun, initiator, isid, tsih, client = raw.rstrip(b"\0").decode(errors="replace").split("\t")
    return target, int(lun), (initiator, isid, tsih, client) if initiator else None
