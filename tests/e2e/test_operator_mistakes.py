"""An operator's mistakes against a real `ringtgt serve`: a removed or replaced image, a second instance on the
same state_dir, a portal another process holds, an unusable state_dir, an image that cannot be created. Each
gives a clear answer (NOT READY to initiators, or one line and exit status 1), never a silent new image, a
shared portal or a crash loop."""
import os
import resource
import signal
import socket
import struct

import initiator as I
import procfs
from harness import (HOST, RingTgt, assert_workers_serve, connections_on_every_worker, poll, serve_expecting_exit)

NAME = "iqn.2026-11.org.ringtgt:operator"
NOT_READY, MANUAL_INTERVENTION_REQUIRED = 0x02, (0x04, 0x03)
def refused(config, *words: str, preexec_fn=None) -> str:
    """`serve` exits 1 with one line that holds every word; the line."""
    status, lines = serve_expecting_exit(config, preexec_fn=preexec_fn)
    assert status == 1 and len(lines) == 1, (status, lines)
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def not_ready(result) -> bool:
    return (result.status == I.CHECK_CONDITION and result.sense.key == NOT_READY
            and (result.sense.asc, result.sense.ascq) == MANUAL_INTERVENTION_REQUIRED)


def answer_past_unit_attentions(ini, cdb: bytes, **kwargs):
    """The first answer to `cdb` that is not a unit attention."""
    for _ in range(8):
        result = ini.scsi(cdb, **kwargs)
        if not (result.status == I.CHECK_CONDITION and result.sense.key == I.UNIT_ATTENTION):
            return result
    raise AssertionError(f"still unit attentions after 8 tries: {result.sense}")


def stopped_with_image(ringtgt) -> RingTgt:
    """A server started once (its LUN's image created and recorded) and stopped again."""
    tgt = ringtgt(workers=1)
    tgt.stop()
    assert tgt.lun_path().exists()
    return tgt


def test_a_removed_image_takes_the_lun_offline_on_every_worker_and_is_never_made_again(ringtgt):
    tgt = ringtgt(workers=2)
    image = tgt.lun_path()
    held = connections_on_every_worker(tgt)
    for index, ini in enumerate(held.values()):
        ini.login(tgt.iqn, initiator_name=f"{NAME}-{index}")
        ini.clear_unit_attentions()
        assert ini.write(index, bytes([index + 1]) * 512, block_size=512).status == I.GOOD
    image.unlink()
    victim, survivor = list(held)
    held.pop(victim).close()
    os.kill(victim, signal.SIGKILL)
    tgt.workers = poll(lambda: len(workers := tgt.listening_children()) == 2 and victim not in workers and workers,
                       timeout=30, what=f"the supervisor to restart worker {victim}")
    assert not image.exists(), "a restarted worker made a new image"
    # the worker still holding the deleted file stops serving it
    poll(lambda: not_ready(held[survivor].scsi(I.CDB_TEST_UNIT_READY)), timeout=30,
         what="the surviving worker's session to get NOT READY")
    assert not_ready(held[survivor].read(0, 1, block_size=512))
    assert not_ready(held[survivor].write(0, b"x" * 512, block_size=512))
    held[survivor].close()
    # new sessions on every worker, the restarted one included
    for index, (pid, ini) in enumerate(connections_on_every_worker(tgt).items()):
        with ini:
            ini.login(tgt.iqn, initiator_name=f"{NAME}-new-{index}")
            assert not_ready(answer_past_unit_attentions(ini, I.CDB_TEST_UNIT_READY)), pid
            assert not_ready(ini.read(0, 1, block_size=512)), pid
            assert not_ready(ini.write(0, b"y" * 512, block_size=512)), pid
            assert ini.scsi(I.cdb_inquiry(), read_length=255).status == I.GOOD     # the unit is still there
    assert not image.exists()
    errors = [line for line in tgt.stderr().splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and str(image) in errors[0] and "missing" in errors[0], errors
    print(errors[0])


def test_serve_refuses_to_start_with_its_image_missing(ringtgt):
    tgt = stopped_with_image(ringtgt)
    tgt.lun_path().unlink()
    print(refused(tgt.config, str(tgt.lun_path()), "missing"))
    assert not tgt.lun_path().exists()


def test_serve_refuses_a_replaced_image(ringtgt):
    tgt = stopped_with_image(ringtgt)
    other = tgt.dir / "other.img"
    other.write_bytes(bytes(tgt.luns[0].size_bytes))
    os.replace(other, tgt.lun_path())           # the same name, another file (inode)
    print(refused(tgt.config, str(tgt.lun_path()), "replaced"))


def register(ini, key: int):
    cdb = struct.pack(">BBB2xIB", 0x5F, 0, 0, 24, 0)        # PERSISTENT RESERVE OUT, REGISTER
    return ini.scsi(cdb, data_out=struct.pack(">QQ4xB3x", 0, key, 0))


def test_a_second_serve_on_the_same_state_dir_exits_and_leaves_the_first_alone(ringtgt):
    tgt = ringtgt(workers=2)
    with I.Initiator.connect(HOST, tgt.port) as ini:
        ini.login(tgt.iqn, initiator_name=f"{NAME}-pr")
        ini.clear_unit_attentions()
        assert register(ini, 0x1234).status == I.GOOD
    state = tgt.dir / "state"
    live = poll(lambda: list((state / "reservations").glob("live-*.json")), timeout=10,
                what="the coordinator's reservation state file")
    sockets = sorted(p.name for p in state.iterdir() if p.is_socket())
    line = refused(tgt.config, str(state), "in use", str(tgt.proc.pid))
    print(line)
    assert all(path.exists() for path in live)
    assert sorted(p.name for p in state.iterdir() if p.is_socket()) == sockets
    assert_workers_serve(tgt, f"{NAME}-after")


def test_the_children_of_a_killed_supervisor_keep_its_state_dir_until_they_are_gone(tmp_path):
    tgt = RingTgt(tmp_path / "t").start()
    orphans = tgt.workers + [tgt.coordinator()]
    RingTgt.running.remove(tgt)
    try:
        os.kill(tgt.proc.pid, signal.SIGKILL)
        tgt.proc.wait()
        print(refused(tgt.config, "in use", str(tgt.proc.pid)))    # its children still serve: not a second instance
    finally:
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
    poll(lambda: not any(procfs.alive(pid) for pid in orphans), timeout=30, what="the orphans to die")
    tgt.start()                                 # the lock went with the last of them
    tgt.stop()


def listener(port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    sock.listen()
    return sock


def test_a_portal_another_process_listens_on_is_refused(tmp_path):
    for reuseport in (True, False):         # a foreign SO_REUSEPORT listener is not joined; a plain one not fought
        tgt = RingTgt(tmp_path / f"reuseport-{reuseport}")
        with listener(tgt.port, reuseport):
            print(refused(tgt.config, tgt.portal, "another process listens on it"))
        assert not tgt.lun_path().exists()      # nothing made before the portals were checked


def test_an_unusable_state_dir_is_refused(tmp_path):
    tgt = RingTgt(tmp_path / "t")
    (tgt.dir / "state").write_text("not a directory\n")
    print(refused(tgt.config, f"state_dir {tgt.dir / 'state'}: not a directory"))


def test_an_image_that_cannot_be_created_is_refused_naming_it(tmp_path):
    tgt = RingTgt(tmp_path / "t")           # LUN 0: 64 MiB, more than the file size limit below allows
    limit = 1 << 20

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    print(refused(tgt.config, str(tgt.lun_path()), "File too large", preexec_fn=small_files))
    assert not tgt.lun_path().exists()      # none left behind half made
