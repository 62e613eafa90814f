"""A logical unit's shared state as pure code, below both packages: the coordinator runs these state machines as
the authority (coordinator/unit_service.py) and the SCSI layer (target/scsi) uses their vocabulary, so `target`
imports `coordinator` and never the reverse.

    status.py        SAM status codes
    sense.py         sense keys, ASC/ASCQ, fixed-format sense data, ScsiError
    reservations.py  SPC-4 persistent and SPC-2 reservations of one unit (`Reservations`, `Outcome`)
    medium.py        a removable medium and the sanitize state of one unit (`MediumState`)
    files.py         atomic state files (APTPL, sanitize records, snapshots)
"""
