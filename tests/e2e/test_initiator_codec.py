"""tests/initiator.py's own encoding, checked against byte layouts written out from RFC 7143 / SBC-3."""
import initiator as I


def test_login_request_layout():
    ini = I.Initiator.__new__(I.Initiator)
    ini.isid, ini.tsih, ini.cid, ini.cmd_sn, ini.exp_stat_sn = bytes.fromhex("80aabbccddee"), 0, 1, 7, 0
    pdu = ini.login_request([("InitiatorName", "iqn.x")], csg=1, nsg=3, itt=0x11)
    bhs = pdu.bhs
    assert len(bhs) == 48
    assert bhs[0] == 0x43 and bhs[1] == 0x87  # I + opcode 3; T, CSG 1, NSG 3
    assert int.from_bytes(bhs[5:8], "big") == len(b"InitiatorName=iqn.x\0")
    assert bhs[8:14] == bytes.fromhex("80aabbccddee") and bhs[14:16] == b"\0\0"
    assert bhs[16:20] == (0x11).to_bytes(4, "big") and bhs[20:22] == b"\0\1"
    assert bhs[24:28] == (7).to_bytes(4, "big")
    assert pdu.encode() == bhs + b"InitiatorName=iqn.x\0"  # 20 bytes: already 4-aligned


def test_padding_and_text_round_trip():
    pdu = I.Pdu(I.build_bhs(I.TEXT_REQUEST, 0x80, data_length=5), b"A=bc\0")
    assert len(pdu.encode()) == 48 + 8
    assert I.decode_text(b"A=b\0C=\0D=e=f\0") == [("A", "b"), ("C", ""), ("D", "e=f")]


def test_cdbs_and_lun():
    assert I.cdb_read10(0x01020304, 0x0506) == bytes.fromhex("28000102030400050600")
    assert I.cdb_write16(1, 2, fua=True) == bytes.fromhex("8a080000000000000001000000020000")
    assert I.encode_lun(5) == bytes([0, 5, 0, 0, 0, 0, 0, 0])
    assert I.encode_lun(300) == bytes([0x41, 0x2C, 0, 0, 0, 0, 0, 0])


def test_sense_formats():
    fixed = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0])
    assert (I.Sense.parse(fixed).key, I.Sense.parse(fixed).asc) == (5, 0x21)
    descriptor = bytes([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0])
    sense = I.Sense.parse(descriptor)
    assert (sense.key, sense.asc, sense.ascq) == (5, 0x24, 0)
