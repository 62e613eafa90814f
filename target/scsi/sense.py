"""The SCSI layer's sense vocabulary (keys, ASC/ASCQ, `ScsiError`, `check_condition`): it lives in
coordinator/unit_state/sense.py, since the unit state machines the coordinator runs answer with it too."""
from coordinator.unit_state.sense import *  # noqa: F401,F403
