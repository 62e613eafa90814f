"""Reads one at a time on a file LUN without atomic writes, where each read's Data-In leaves linked to its disk read
(the connection's `_send_with_read`, the worker's `Ring.prep_read_send`), through the page cache and O_DIRECT, and
on a LUN with atomic writes, where it does not (`sends_with_read`): the data is what was
written, StatSN goes on without a gap, and a read whose first op stops short (the image cut short under the LUN,
so the kernel cancels the send) is answered with the rest read as zeros, in StatSN order, and the next reads
go on as before."""
import os

import pytest

from harness import HOST, Lun

import initiator as I

BS = 512


def reads_in_order(ini: I.Initiator, pieces, data: bytes) -> list[int]:
    """Read each (lba, blocks) one at a time; the StatSN of each answer."""
    stat_sns = []
    for lba, blocks in pieces:
        result = ini.read(lba, blocks, block_size=BS)
        assert result.status == I.GOOD and result.data == data[lba * BS:(lba + blocks) * BS], (lba, blocks)
        stat_sns.append(result.response_pdu.stat_sn)
    return stat_sns


@pytest.mark.parametrize("keys", ["atomic_writes = false", "atomic_writes = false\ndirect = true", "direct = true"],
                         ids=["page-cache", "o-direct", "o-direct-atomic"])
def test_reads_one_at_a_time_answer_the_data_in_stat_sn_order(ringtgt, keys):
    tgt = ringtgt(luns=[Lun(0, "1MiB", BS, keys)], workers=1)
    data = os.urandom(64 * BS)
    with I.Initiator.connect(HOST, tgt.port) as ini:
        ini.login(tgt.iqn)
        ini.clear_unit_attentions()
        assert ini.write(0, data, block_size=BS).status == I.GOOD
        pieces = [(lba, blocks) for blocks in (1, 8, 16) for lba in range(0, 64 - blocks, 7)]
        stat_sns = reads_in_order(ini, pieces, data)
        assert stat_sns == list(range(stat_sns[0], stat_sns[0] + len(pieces)))

        # the image cut short within block 20: a read of blocks 16-31 reads 2,000 bytes, then the end of the file
        os.truncate(tgt.lun_path(0), 16 * BS + 2000)
        result = ini.read(16, 16, block_size=BS)
        assert result.status == I.GOOD and result.data == data[16 * BS:16 * BS + 2000] + bytes(16 * BS - 2000)
        assert result.response_pdu.stat_sn == stat_sns[-1] + 1
        after = reads_in_order(ini, [(0, 8), (8, 8)], data)
        assert after == [stat_sns[-1] + 2, stat_sns[-1] + 3]
        assert ini.nop_ping(b"still here").data == b"still here"
