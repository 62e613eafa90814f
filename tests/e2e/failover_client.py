"""Run by test_failover.py inside the client's namespace: take a persistent reservation on LUN 0 through the
VIP, or print the one that is there.

    python failover_client.py reserve|show HOST PORT TARGET KEY
"""
import json
import sys

import initiator as I
from pr_commands import REGISTER, RESERVE, WRITE_EXCLUSIVE, good, prout, reservation

NAME = "iqn.2026-11.org.ringtgt:fencer"


def main(action: str, host: str, port: str, target: str, key: str) -> None:
    with I.Initiator.connect(host, int(port)) as ini:
        ini.login(target, initiator_name=NAME)
        ini.clear_unit_attentions()
        if action == "reserve":
            good(prout(ini, REGISTER, 0, int(key)))
            good(prout(ini, RESERVE, int(key), pr_type=WRITE_EXCLUSIVE))
        print(json.dumps(reservation(ini)))


if __name__ == "__main__":
    main(*sys.argv[1:])
