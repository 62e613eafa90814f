"""libiscsi's command-line initiators against a live ringtgt: discovery, INQUIRY, READ CAPACITY(16)."""
import re
import tomllib

import pytest
from harness import HOST, Lun, ringtgt_binary, run, tool

import initiator as I


def resolved_luns(tgt) -> dict[int, dict]:
    """The LUNs as `ringtgt check-config` resolves them (serial and NAA identities included)."""
    out = run([ringtgt_binary(), "check-config", "--config", str(tgt.config)]).stdout
    [target] = tomllib.loads(out)["target"]
    return {lun["id"]: lun for lun in target["lun"]}


def test_iscsi_ls_discovers_target_and_luns(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "64MiB"), Lun(3, "16MiB", 4096)])
    out = run([tool("iscsi-ls"), "-s", f"iscsi://{tgt.portal}"]).stdout
    assert re.search(rf"^Target:{re.escape(tgt.iqn)} Portal:{re.escape(tgt.portal)},\d+$", out, re.M), out
    luns = dict(re.findall(r"^Lun:(\d+)\s+Type:(\S+)", out, re.M))
    assert luns == {"0": "DIRECT_ACCESS", "3": "DIRECT_ACCESS"}, out


def test_iscsi_inq_standard(shared_ringtgt):
    out = run([tool("iscsi-inq"), shared_ringtgt.url(0)]).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert fields["Peripheral Qualifier"] == "CONNECTED", out
    assert fields["Peripheral Device Type"] == "DIRECT_ACCESS", out
    assert fields["ReponseDataFormat"] == "2", out  # (sic) libiscsi's spelling
    assert fields["Vendor"].strip() and fields["Product"].strip(), out


def test_iscsi_inq_unit_serial_number(shared_ringtgt):
    expected = resolved_luns(shared_ringtgt)[0]["serial"]
    supported = run([tool("iscsi-inq"), "-e", "1", "-c", "0", shared_ringtgt.url(0)]).stdout
    assert "Page:0x80 UNIT_SERIAL_NUMBER" in supported and "Page:0x83 DEVICE_IDENTIFICATION" in supported, \
        supported
    out = run([tool("iscsi-inq"), "-e", "1", "-c", str(0x80), shared_ringtgt.url(0)]).stdout
    match = re.search(r"Unit Serial Number:\[\s*(\S+)\]", out)
    assert match and match[1] == expected, out


def test_iscsi_inq_device_identification(shared_ringtgt):
    out = run([tool("iscsi-inq"), "-e", "1", "-c", str(0x83), shared_ringtgt.url(0)]).stdout
    assert "Page Code:(0x83) DEVICE_IDENTIFICATION" in out, out
    assert "Designator Type:(3) NAA" in out, out
    # iscsi-inq prints binary designators as raw bytes: check the NAA bytes through the Python initiator.
    expected_naa = bytes.fromhex(resolved_luns(shared_ringtgt)[0]["naa"])
    with I.Initiator.connect(HOST, shared_ringtgt.port) as ini:
        ini.login(shared_ringtgt.iqn, initiator_name="iqn.2026-11.org.ringtgt:inq83")
        ini.clear_unit_attentions()
        page = ini.scsi(I.cdb_inquiry(255, evpd=True, page=0x83), read_length=255)
    assert page.status == I.GOOD and page.data[1] == 0x83
    designators, offset = [], 4
    while offset + 4 <= 4 + int.from_bytes(page.data[2:4], "big"):
        length = page.data[offset + 3]
        designators.append((page.data[offset + 1] & 0x0F, page.data[offset + 4:offset + 4 + length]))
        offset += 4 + length
    assert (3, expected_naa) in designators, designators


@pytest.mark.parametrize("block_size", [512, 4096])
def test_iscsi_readcapacity16_reports_size_and_block_size(ringtgt, block_size):
    lun = Lun(0, "48MiB", block_size)
    tgt = ringtgt(luns=[lun])
    out = run([tool("iscsi-readcapacity16"), tgt.url(0)]).stdout
    assert f"RETURNED LOGICAL BLOCK ADDRESS:{lun.blocks - 1}\n" in out, out
    assert f"LOGICAL BLOCK LENGTH IN BYTES:{block_size}\n" in out, out
    assert f"Total size:{lun.size_bytes}\n" in out, out


def test_iscsi_readcapacity16_second_lun(ringtgt):
    tgt = ringtgt(luns=[Lun(0, "64MiB"), Lun(1, "8MiB", 4096)])
    out = run([tool("iscsi-readcapacity16"), "-s", tgt.url(1)]).stdout
    assert out.split() == [str(8 << 20)], out
