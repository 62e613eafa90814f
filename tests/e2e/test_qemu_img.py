"""QEMU's block layer (qemu-img with iscsi:// URLs) writes an image onto a LUN and reads it back."""
import os

import pytest
from harness import Lun, run, tool

IMAGE = 8 << 20


@pytest.mark.parametrize("block_size", [512, 4096])
def test_qemu_img_convert_round_trip(ringtgt, tmp_path, block_size):
    tgt = ringtgt(luns=[Lun(0, "64MiB", block_size)])
    source, back = tmp_path / "source.raw", tmp_path / "back.raw"
    source.write_bytes(os.urandom(IMAGE))
    qemu_img = tool("qemu-img")
    run([qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(source), tgt.url(0)], timeout=300)
    run([qemu_img, "convert", "-f", "raw", "-O", "raw", tgt.url(0), str(back)], timeout=300)
    assert back.stat().st_size == 64 << 20
    with open(back, "rb") as f:
        assert f.read(IMAGE) == source.read_bytes(), "first 8 MiB read back differ from what was written"
