"""Fixed-format sense building and the CHECK CONDITION helper."""
from target.scsi import sense as S
from target.scsi.task import CHECK_CONDITION, ScsiTask


def test_fixed_format_layout():
    data = S.build_sense(S.ILLEGAL_REQUEST, S.LBA_OUT_OF_RANGE)
    assert len(data) == 18
    assert data[0] == 0x70 and data[2] == 0x05 and data[7] == 10
    assert (data[12], data[13]) == (0x21, 0x00)
    assert data[15:18] == b"\0\0\0"


def test_field_pointer_in_cdb_with_bit():
    data = S.build_sense(S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(1, 7))
    assert data[15] == 0x80 | 0x40 | 0x08 | 7          # SKSV, C/D, BPV, bit pointer
    assert data[16:18] == b"\x00\x01"


def test_field_pointer_parameter_list_whole_byte():
    data = S.build_sense(S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_PARAMETER_LIST, S.Field(300, None, False))
    assert data[15] == 0x80
    assert int.from_bytes(data[16:18], "big") == 300
    assert (data[12], data[13]) == (0x26, 0x00)


def test_named_pairs():
    assert S.POWER_ON_RESET == 0x2900 and S.MODE_PARAMETERS_CHANGED == 0x2A01
    assert S.SAVING_PARAMETERS_NOT_SUPPORTED == 0x3900 and S.PARAMETER_LIST_LENGTH_ERROR == 0x1A00
    assert S.WRITE_ERROR == 0x0C00 and S.UNRECOVERED_READ_ERROR == 0x1100


def test_invalid_helpers_build_errors():
    error = S.invalid_cdb(4, 1)
    assert (error.key, error.asc_ascq, error.field) == (S.ILLEGAL_REQUEST, S.INVALID_FIELD_IN_CDB, S.Field(4, 1))
    error = S.invalid_parameter(9)
    assert error.asc_ascq == S.INVALID_FIELD_IN_PARAMETER_LIST and not error.field.in_cdb


def test_check_condition_finishes_the_task():
    done = []
    task = ScsiTask(0, bytes(16), "n", "iqn.i", 0, False, False, None, done.append)
    S.check_condition(task, S.UNIT_ATTENTION, S.POWER_ON_RESET)
    assert done == [task]
    assert task.status == CHECK_CONDITION and task.data_in is None
    assert task.sense == S.build_sense(S.UNIT_ATTENTION, S.POWER_ON_RESET)
