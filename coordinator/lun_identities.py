"""The identities of a node's LUNs (serial, NAA, size), which every node of a cluster must agree on: an initiator
that fails over to a peer must find the same logical units there. Each coordinator sends its own to every peer that
comes up and to every peer after each reload (coordinator/cluster.py); a difference is logged as a warning."""
from __future__ import annotations

Identity = list          # [target, lun, serial, naa, size]


def lun_identities(config, sizes) -> list[Identity]:
    """Every LUN of `config` as [target, lun, serial, naa, size]; `sizes(target, lun)` is the size a resize grew it
    to, or None."""
    return [[target.iqn, lun.id, lun.serial, lun.naa, sizes(target.iqn, lun.id) or lun.size]
            for target in config.targets for lun in target.luns]


def mismatches(ours: list[Identity], theirs: list[Identity], peer: str) -> list[str]:
    """What differs between our LUNs and `peer`'s, one sentence each (nothing when they agree)."""
    mine = {(target, lun): rest for target, lun, *rest in ours}
    peers = {(target, lun): rest for target, lun, *rest in theirs}
    found = []
    for key in sorted(mine.keys() | peers.keys()):
        target, lun = key
        if key not in peers:
            found.append(f"LUN {lun} of {target} is served here, not by peer {peer}")
        elif key not in mine:
            found.append(f"LUN {lun} of {target} is served by peer {peer}, not here")
        else:
            for name, here, there in zip(("serial", "naa", "size"), mine[key], peers[key]):
                if here != there:
                    found.append(f"LUN {lun} of {target}: {name} {here!r} here, {there!r} on peer {peer}")
    return found
