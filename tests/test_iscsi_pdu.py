"""PDU codec: BHS fields round-trip, typed accessors, LUN addressing, padding."""
from target.iscsi import pdu as P
from tests.iscsi_helpers import build, login_request, scsi_command


def test_scsi_command_fields():
    raw = scsi_command(b"\x28" + bytes(9), itt=0x1234, cmd_sn=7, edtl=4096, read=True, lun=3)
    pdu = P.decode_bhs(raw[:48])
    assert isinstance(pdu, P.ScsiCommand)
    assert (pdu.itt, pdu.cmd_sn, pdu.expected_length, pdu.read, pdu.write) == (0x1234, 7, 4096, True, False)
    assert P.decode_lun(pdu.lun_field) == 3
    assert pdu.cdb[:1] == b"\x28" and len(pdu.cdb) == 16


def test_login_request_fields():
    pdu = P.decode_bhs(login_request([("InitiatorName", "iqn.x")], isid=0x800000000001, tsih=0, cmd_sn=5)[:48])
    assert isinstance(pdu, P.LoginRequest)
    assert (pdu.csg, pdu.nsg, pdu.transit, pdu.cont) == (1, 3, True, False)
    assert (pdu.isid, pdu.tsih, pdu.cmd_sn) == (0x800000000001, 0, 5)


def test_unknown_opcode_decodes_as_unknown():
    pdu = P.decode_bhs(build(0x1F)[:48])
    assert isinstance(pdu, P.UnknownPdu) and pdu.opcode == 0x1F


def test_encode_round_trip():
    header = P.encode(P.R2T, P.FINAL, 0, lun=P.encode_lun(2), itt=9, w20=10, w24=11, w36=1, w40=512, w44=8192)
    pdu = P.decode_bhs(header)
    assert pdu.opcode == P.R2T and pdu.itt == 9 and (pdu.w20, pdu.w24, pdu.w36, pdu.w40, pdu.w44) == (
        10, 11, 1, 512, 8192)
    assert P.decode_lun(pdu.lun_field) == 2


def test_lun_addressing():
    assert P.decode_lun(P.encode_lun(5)) == 5
    assert P.decode_lun(P.encode_lun(300)) == 300
    assert P.decode_lun(0x0001_0000_0000_0001) == -1        # second level set: not a single-level LUN
    assert P.decode_lun(0x8000 << 48) == -1                  # logical unit addressing: unsupported


def test_padding():
    assert [len(P.padding(n)) for n in range(5)] == [0, 3, 2, 1, 0]
    assert P.frame(b"h" * 48, b"abcde") == b"h" * 48 + b"abcde\0\0\0"


def test_extended_cdb_ahs():
    raw = bytearray(scsi_command(bytes(16)))
    ahs = (17).to_bytes(2, "big") + b"\x01\x00" + bytes(range(16)) + b"\xAA" + bytes(3)
    raw[4] = len(ahs) // 4
    pdu = P.decode_bhs(bytes(raw[:48]))
    pdu.ahs = ahs
    assert pdu.cdb == bytes(16) + bytes(range(16))
