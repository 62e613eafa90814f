"""PERSISTENT RESERVE IN / OUT, LOGICAL UNIT RESET and the status checks the end-to-end reservation tests share, sent
through the Python initiator (tests/initiator.py); also imported by failover_client.py, which runs outside pytest."""
import struct

import initiator as I

RESERVATION_CONFLICT = 0x18
REGISTER, RESERVE, CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_IGNORE_EXISTING_KEY = 0, 1, 3, 4, 5, 6
READ_KEYS, READ_RESERVATION = 0, 1
WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS = 1, 3
APTPL = 0x01
TMF_LUN_RESET = 5


def prout(ini, action, key=0, action_key=0, pr_type=0, flags=0, lun=0):
    cdb = struct.pack(">BBB2xIB", 0x5F, action, pr_type, 24, 0)
    return ini.scsi(cdb, lun=lun, data_out=struct.pack(">QQ4xB3x", key, action_key, flags))


def prin(ini, action, lun=0):
    result = ini.scsi(struct.pack(">BB5xHB", 0x5E, action, 1024, 0), lun=lun, read_length=1024)
    assert result.status == I.GOOD, result
    return result.data


def read_keys(ini, lun=0) -> list[int]:
    data = prin(ini, READ_KEYS, lun)
    length = struct.unpack_from(">I", data, 4)[0]
    return [struct.unpack_from(">Q", data, 8 + i)[0] for i in range(0, length, 8)]


def reservation(ini, lun=0):
    data = prin(ini, READ_RESERVATION, lun)
    if not struct.unpack_from(">I", data, 4)[0]:
        return None
    key, scope_type = struct.unpack_from(">Q4xxB", data, 8)
    return key, scope_type & 0x0F


def good(result):
    assert result.status == I.GOOD, (result.status, result.sense)
    return result


def conflict(result):
    assert result.status == RESERVATION_CONFLICT, (result.status, result.sense)


def unit_attention(ini, asc, ascq):
    result = ini.scsi(bytes(6))
    assert result.status == I.CHECK_CONDITION and result.sense.key == I.UNIT_ATTENTION, result
    assert (result.sense.asc, result.sense.ascq) == (asc, ascq), result.sense


def lun_reset(ini) -> int:
    """A LOGICAL UNIT RESET task management request; its response code."""
    itt = ini.next_itt()
    rest = struct.pack(">IIIII", I.RESERVED_TAG, ini.cmd_sn, ini.exp_stat_sn, 0, 0)
    ini.send_pdu(I.Pdu(I.build_bhs(I.TASK_MGMT, 0x80 | TMF_LUN_RESET, immediate=True,
                                   lun_or_isid=I.encode_lun(0), itt=itt, rest=rest)))
    answer = ini.recv_answer(itt)
    assert answer.opcode == I.TASK_MGMT_RESPONSE, answer
    return answer.bhs[2]
