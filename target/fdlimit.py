"""The open files limit: `serve` raises its soft RLIMIT_NOFILE to the hard limit before it forks.

Every connection and every LUN image costs each worker a descriptor; systemd's default soft limit (1024) is
gone with a few hundred LUNs and idle connections, while the hard limit is usually far higher. The children
inherit the raised limit. ringtgt uses no select(), which is what the soft limit protects.
"""
from __future__ import annotations

import logging
import resource

log = logging.getLogger("ringtgt.fdlimit")

NR_OPEN = "/proc/sys/fs/nr_open"        # the most a process may have: the ceiling of an "unlimited" hard limit


def raise_open_files_limit() -> int:
    """Set the soft limit to the hard one, log the result once; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        with open(NR_OPEN) as f:
            wanted = int(f.read())
    if soft == wanted:
        log.info("open files limit %d (the hard limit)", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files limit %d: could not raise it to the hard limit %d: %s", soft, wanted, exc)
        return soft
    log.info("open files limit raised from %d to the hard limit %d", soft, wanted)
    return wanted
