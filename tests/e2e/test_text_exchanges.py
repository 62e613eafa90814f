"""Login and Text exchanges a client can abuse or an initiator can get wrong: continued key text beyond the cap,
a SendTargets answer larger than the initiator takes in one PDU, a SendTargets value that names nothing."""
import os
import re
import threading

from harness import HOST, run, session, tool

import initiator as I

NAME = "iqn.2026-11.org.ringtgt:text-e2e"
MANY = 256


def flood_login(port: int, pdus: int = 64) -> tuple[int, int | None, bool]:
    """Continued Login Requests of 8000 bytes of key text each, each answer awaited: (PDUs the target acknowledged,
    the status of the first failure or None, whether the target then closed the connection)."""
    with I.Initiator.connect(HOST, port) as ini:
        for sent in range(pdus):
            pdu = ini.login_request([("InitiatorName", f"{NAME}-flood"), ("X-Pad", "f" * 7960)], csg=0, nsg=1,
                                    transit=False)
            ini.send_pdu(I.Pdu(pdu.bhs[:1] + bytes([pdu.bhs[1] | 0x40]) + pdu.bhs[2:], pdu.data))
            answer = ini.recv_pdu()
            status = int.from_bytes(answer.bhs[36:38], "big")
            if status:
                ini.sock.settimeout(30)
                return sent, status, ini.wait_closed() == b""
        return pdus, None, False


def test_login_flooders_are_refused_and_others_on_the_worker_keep_working(ringtgt):
    """Four clients that continue their login text past 64 KiB each get Initiator Error (0x0200) and are closed;
    a session on the same (only) worker reads and writes throughout."""
    tgt = ringtgt(workers=1)
    results = []
    with session(tgt, NAME + "-victim") as victim:
        flooders = [threading.Thread(target=lambda: results.append(flood_login(tgt.port))) for _ in range(4)]
        for flooder in flooders:
            flooder.start()
        commands, data = 0, os.urandom(4096)
        while any(f.is_alive() for f in flooders) or commands < 20:
            assert victim.write(64, data, block_size=512).status == I.GOOD
            assert victim.read(64, 8, block_size=512).data == data
            commands += 2
        for flooder in flooders:
            flooder.join(60)
    print(f"flooders (acknowledged PDUs, status, closed): {results}; victim commands meanwhile: {commands}")
    assert results == [(8, 0x0200, True)] * 4
    assert "login key text longer than 65536 bytes" in tgt.stderr()


def many_targets(tgt_dir_lun) -> str:
    return "\n".join(f'[[target]]\niqn = "iqn.2026-11.org.ringtgt:many-{i:03d}"\n[[target.lun]]\nid = 0\n'
                     f'path = "{tgt_dir_lun}/many-{i:03d}.img"\nsize = "1MiB"\n' for i in range(MANY - 1))


def test_send_targets_for_256_targets_is_split_to_the_initiators_segment_length(ringtgt, tmp_path):
    """SendTargets=All over 256 targets to an initiator that declared MaxRecvDataSegmentLength 8192: continued
    Text Responses of at most 8192 bytes (C bit, TTT), together the whole list; libiscsi (which declares 256 KiB
    and takes the answer in one PDU) lists every target too."""
    tgt = ringtgt(workers=1, extra=many_targets(tmp_path))
    with I.Initiator.connect(HOST, tgt.port) as ini:
        ini.login(None, initiator_name=NAME + "-disc", session_type="Discovery",
                  operational={"MaxRecvDataSegmentLength": "8192"})
        parts = ini.text_pdus(b"SendTargets=All\0")
    sizes = [len(p.data) for p in parts]
    print(f"SendTargets=All over {MANY} targets: {len(parts)} Text Responses of {sizes} bytes")
    assert all(p.opcode == I.TEXT_RESPONSE for p in parts) and len(parts) >= 3 and max(sizes) <= 8192
    assert all(p.flags == 0x40 and p.ttt != I.RESERVED_TAG for p in parts[:-1]) and parts[-1].flags == 0x80
    names = [v for k, v in I.decode_text(b"".join(p.data for p in parts)) if k == "TargetName"]
    assert len(names) == MANY == len(set(names))
    out = run([tool("iscsi-ls"), "-s", f"iscsi://{tgt.portal}"]).stdout
    listed = re.findall(r"^Target:(\S+) Portal:", out, re.M)
    print(f"iscsi-ls listed {len(listed)} targets")
    assert sorted(listed) == sorted(names)


def test_send_targets_with_a_value_that_names_nothing_is_rejected(shared_ringtgt):
    """`SendTargets=Alle` is a Reject (protocol error), as LIO answers it; a well-formed name of a target that does
    not exist gets an empty answer; the session goes on."""
    with I.Initiator.connect(HOST, shared_ringtgt.port) as ini:
        ini.login(None, initiator_name=NAME + "-alle", session_type="Discovery")
        [reject] = ini.text_pdus(b"SendTargets=Alle\0")
        assert reject.opcode == I.REJECT and reject.bhs[2] == 0x04, reject
        [empty] = ini.text_pdus(b"SendTargets=iqn.2026-11.org.ringtgt:no-such-target\0")
        assert empty.opcode == I.TEXT_RESPONSE and empty.final and empty.data == b""
        assert ("TargetName", shared_ringtgt.iqn) in ini.send_targets()
        assert ini.logout().bhs[2] == 0
