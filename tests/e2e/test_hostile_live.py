"""Thousands of malformed PDUs and login sequences thrown at a running target while fio writes through it with
verification: no worker dies, nothing is logged as an internal error, fio reports no error, and afterwards
the same workers still serve. The cases are random but seeded, so a failure replays.

fio writes to LUN 1; the garbage that reaches the SCSI layer goes to LUN 0. Task management is limited to
functions that act on the sender's own tasks or on LUN 0: a target reset is not malformed input but an
initiator's right, and the commands it aborts never answer (SAM-5), which libiscsi, without a command timeout,
would wait for forever."""
import random
import signal
import socket

from harness import HOST, FioRun, Lun, assert_workers_serve, write_fio_job

import initiator as I
from tests.iscsi_helpers import login_request

CASES = 2000
SEED = 7143
OPCODES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1C, 0x3F)
LENGTHS = (0, 0, 1, 7, 48, 512, 8192, 262144, 0xFFFFFF)


def mutated_pdu(rng: random.Random) -> bytes:
    """A BHS of random fields around a real opcode, lengths from the edges, and some of its payload."""
    bhs = bytearray(rng.randbytes(48))
    bhs[0] = rng.choice(OPCODES) | (0x40 if rng.random() < 0.3 else 0)
    bhs[4] = rng.choice((0, 0, 0, 1, 4, 255))
    length = rng.choice(LENGTHS)
    bhs[5:8] = length.to_bytes(3, "big")
    opcode = bhs[0] & 0x3F
    if opcode in (0x01, 0x02) or rng.random() < 0.5:
        bhs[8:16] = bytes(8)                                # LUN 0: SCSI commands reach the SCSI layer there
    if opcode == 0x02:
        bhs[1] = 0x80 | rng.randrange(1, 5)                 # ABORT TASK (SET), CLEAR ACA, CLEAR TASK SET
    if opcode == 0x01 and rng.random() < 0.5:
        bhs[32] = rng.choice((0x00, 0x12, 0x25, 0x28, 0x2A, 0x35, 0x41, 0x42, 0x5E, 0x5F, 0x89, 0x8A, 0x9E, 0xA3))
    payload = bhs[4] * 4 + length + (-length & 3)
    return bytes(bhs) + rng.randbytes(min(payload, rng.choice((0, 64, 4096))))


def bad_login(rng: random.Random, target: str) -> bytes:
    keys = [("InitiatorName", "iqn.2026-11.org.ringtgt:fuzz"), ("SessionType", "Normal"), ("TargetName", target),
            ("AuthMethod", rng.choice(("None", "CHAP", "KRB5,SRP", "")))]
    mutation = rng.randrange(6)
    if mutation == 0:
        del keys[rng.randrange(len(keys))]
    elif mutation == 1:
        keys.append((rng.choice(("MaxBurstLength", "HeaderDigest", "X-long")), "9" * rng.choice((100, 9000))))
    elif mutation == 2:
        keys += [(f"X-key{i}", "v") for i in range(rng.choice((100, 900)))]
    elif mutation == 3:
        keys.append(("MaxRecvDataSegmentLength", rng.choice(("0", "-1", "99999999999", "abc", ""))))
    raw = bytearray(login_request(keys, csg=rng.choice((0, 1, 2, 3)), nsg=rng.choice((0, 1, 2, 3)),
                                  transit=rng.random() < 0.8, tsih=rng.choice((0, 0, 1, 0xFFFF)),
                                  cont=rng.random() < 0.1))
    if mutation == 4:
        for _ in range(rng.randrange(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    if mutation == 5:
        raw = raw[:rng.randrange(1, len(raw))]
    return bytes(raw)


def throw(rng: random.Random, port: int, target: str) -> None:
    kind = rng.random()
    if kind < 0.4:                                          # a session first, then garbage inside it
        with I.Initiator.connect(HOST, port) as ini:
            ini.login(target, initiator_name=f"iqn.2026-11.org.ringtgt:fuzz{rng.randrange(4)}")
            ini.send_raw(b"".join(mutated_pdu(rng) for _ in range(rng.randrange(1, 6))))
        return
    with socket.create_connection((HOST, port), timeout=10) as sock:
        if kind < 0.7:
            sock.sendall(bad_login(rng, target) * rng.choice((1, 1, 2)))
        else:
            sock.sendall(rng.randbytes(rng.randrange(1, 600)))
        sock.settimeout(0.05)
        try:
            sock.recv(4096)                                 # whatever the target answers, if it does at once
        except (TimeoutError, ConnectionError):
            pass


def test_malformed_pdus_and_logins_during_verified_writes(ringtgt, tmp_path):
    tgt = ringtgt(luns=[Lun(0, "64MiB", 512), Lun(1, "64MiB", 512)])
    job = write_fio_job(tmp_path / "verified.fio", tgt.url(1), rw="randwrite", bs="4k", iodepth=8, size="32MiB",
                        time_based=1, runtime=600, verify="crc32c", verify_backlog=512, verify_fatal=1,
                        initiator="iqn.2026-11.org.ringtgt:victim")
    rng = random.Random(SEED)
    with FioRun(job, tmp_path / "fio.out") as fio:
        for case in range(CASES):
            try:
                throw(rng, tgt.port, tgt.iqn)
            except (I.LoginFailed, I.ConnectionClosed, ConnectionError):
                pass                                        # refused: what bad input deserves
            assert fio.proc.poll() is None, f"fio stopped during case {case}:\n{fio.text()}"
        fio.proc.send_signal(signal.SIGINT)                 # fio ends its run and reports
        status = fio.wait(timeout=120)
    text = fio.text()
    assert status in (0, 128) and "err= 0" in text and "verify" not in text.split("Run status")[0].lower().replace(
        "verify=crc32c", ""), f"fio exit {status}:\n{text}"
    assert "Traceback" not in tgt.stderr(), tgt.stderr()
    assert_workers_serve(tgt, "iqn.2026-11.org.ringtgt:after-fuzz")
