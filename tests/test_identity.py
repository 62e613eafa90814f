"""target.identity: stable, well-formed, distinct serials and NAA-6 designators."""
import hashlib
import re

from target.identity import derive_naa, derive_serial

IQN = "iqn.2026-11.org.ringtgt:default"


def test_stable_known_values():
    digest = hashlib.sha256(f"{IQN}/0".encode()).digest()
    assert derive_serial(IQN, 0) == digest[:8].hex().upper()
    assert derive_naa(IQN, 0) == "6001405" + digest[16:].hex()[:25]


def test_formats():
    serial, naa = derive_serial(IQN, 3), derive_naa(IQN, 3)
    assert re.fullmatch(r"[0-9A-F]{16}", serial)
    assert re.fullmatch(r"6001405[0-9a-f]{25}", naa)
    assert len(bytes.fromhex(naa)) == 16  # NAA IEEE Registered Extended: 16 bytes


def test_case_of_the_name_does_not_matter():
    assert derive_serial(IQN.upper(), 1) == derive_serial(IQN, 1)
    assert derive_naa(IQN.upper(), 1) == derive_naa(IQN, 1)


def test_distinct_per_lun_and_target():
    ids = {(derive_serial(iqn, lun), derive_naa(iqn, lun)) for iqn in (IQN, IQN + "2") for lun in range(256)}
    assert len(ids) == 512
    assert len({s for s, _ in ids}) == len({n for _, n in ids}) == 512
