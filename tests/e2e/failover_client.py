"""Run by the failover tests (cluster_lab.client_script) inside a namespace: through the VIP, take a persistent
reservation on LUN 0 or print the one that is there; read a block, or write one as an initiator that holds no
registration (RESERVATION CONFLICT on LUN 0 while it is reserved).

    python failover_client.py reserve|show HOST PORT TARGET KEY
    python failover_client.py read|write HOST PORT TARGET KEY LUN LBA

Prints JSON: the reservation [key, type] (or null); a block as hex; a write's [status, sense key or null].
"""
import json
import sys

import initiator as I
from pr_commands import REGISTER, RESERVE, WRITE_EXCLUSIVE, good, prout, reservation

NAME = "iqn.2026-11.org.ringtgt:fencer"
OUTSIDER = "iqn.2026-11.org.ringtgt:outsider"
BLOCK = 512
PATTERN = b"resurrected node" * (BLOCK // 16)


def main(action: str, host: str, port: str, target: str, key: str, *where: str) -> None:
    with I.Initiator.connect(host, int(port)) as ini:
        ini.login(target, initiator_name=OUTSIDER if action == "write" else NAME)
        ini.clear_unit_attentions()
        if action in ("read", "write"):
            lun, lba = map(int, where)
            ini.clear_unit_attentions(lun)
            if action == "read":
                result = good(ini.scsi(I.cdb_read10(lba, 1), lun=lun, read_length=BLOCK))
                print(json.dumps(result.data.hex()))
            else:
                result = ini.scsi(I.cdb_write10(lba, 1), lun=lun, data_out=PATTERN)
                print(json.dumps([result.status, result.sense.key if result.sense else None]))
            return
        if action == "reserve":
            good(prout(ini, REGISTER, 0, int(key)))
            good(prout(ini, RESERVE, int(key), pr_type=WRITE_EXCLUSIVE))
        print(json.dumps(reservation(ini)))


if __name__ == "__main__":
    main(*sys.argv[1:])
