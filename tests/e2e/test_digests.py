"""CRC32C digests on a live target: QEMU through libiscsi (which offers HeaderDigest only) writing an image and
comparing it, and
the Python initiator with both digests, a Data-Out whose DataDigest is wrong and a header whose HeaderDigest
is wrong (RFC 7143 §7.8 at ErrorRecoveryLevel 0)."""
import os
import struct

from harness import HOST, Lun, run, tool

import initiator as I

BS = 512
IMAGE = 4 << 20
BOTH = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "InitialR2T": "Yes", "ImmediateData": "No"}


def test_qemu_img_round_trip_with_header_digests(ringtgt, tmp_path):
    tgt = ringtgt(luns=[Lun(0, "16MiB", 512)])
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(IMAGE))
    lun = (f"driver=iscsi,transport=tcp,portal={tgt.portal},target={tgt.iqn},lun=0,header-digest=crc32c,"
           "initiator-name=iqn.2026-11.org.ringtgt:digests")
    qemu_img = tool("qemu-img")
    run([qemu_img, "convert", "-n", "-f", "raw", "--target-image-opts", str(source), lun], timeout=300)
    compared = run([qemu_img, "compare", "--image-opts", f"driver=file,filename={source}", lun], timeout=300)
    assert "Images are identical" in compared.stdout, compared.stdout
    assert tgt.stderr().count("HeaderDigest CRC32C, DataDigest None") == 2, tgt.stderr()


def logged_in(tgt) -> I.Initiator:
    ini = I.Initiator.connect(HOST, tgt.port)
    params = ini.login(tgt.iqn, operational=BOTH)
    assert (params["HeaderDigest"], params["DataDigest"]) == ("CRC32C", "CRC32C")
    ini.clear_unit_attentions()
    return ini


def test_both_digests_and_a_data_digest_error(ringtgt):
    tgt = ringtgt(workers=1)
    with logged_in(tgt) as ini:
        block = bytes(range(256)) * 2
        assert ini.write(8, block, block_size=BS).status == 0
        assert ini.read(8, 1, block_size=BS).data == block       # every PDU's digests checked on the way

        itt = ini.next_itt()
        ini.send_pdu(ini.command_pdu(I.cdb_write10(8, 1), write_length=BS, itt=itt))
        r2t = ini.recv_pdu()
        assert r2t.opcode == I.R2T, r2t
        raw = bytearray(ini.data_out_pdu(itt, r2t.ttt, b"\xEE" * BS, offset=0, data_sn=0, final=True)
                        .encode(True, True))
        raw[-1] ^= 0xFF                                            # the DataDigest no longer matches
        ini.send_raw(bytes(raw))
        reject = ini.recv_pdu()
        assert reject.opcode == I.REJECT and reject.bhs[2] == 0x02, reject             # Data-Digest-Error
        assert struct.unpack_from(">I", reject.data, 16)[0] == itt                     # the rejected header
        response = ini.recv_answer(itt)
        sense = I.Sense.parse(response.data[2:])
        assert (response.bhs[3], sense.key, sense.asc, sense.ascq) == (0x02, 0x0B, 0x47, 0x05)
        assert ini.read(8, 1, block_size=BS).data == block       # nothing of it reached the medium


def test_a_header_digest_error_closes_the_connection(ringtgt):
    tgt = ringtgt(workers=1)
    with logged_in(tgt) as ini:
        raw = bytearray(ini.command_pdu(bytes(6), itt=ini.next_itt()).encode(True, True))
        raw[50] ^= 0x01                                            # inside the HeaderDigest
        ini.send_raw(bytes(raw))
        assert ini.wait_closed() == b""
    assert "header digest error" in tgt.stderr()
