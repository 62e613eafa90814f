"""Which RBD image a LUN is and who reaches it: plain data, so that naming an image loads neither librados nor
librbd (rados.py and rbd.py do, in the processes that serve an RBD LUN)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CephClient:
    """Who connects: the ceph.conf (None: librados' default search), the client name ("client.admin" when None),
    the keyring (None: what ceph.conf names)."""

    ceph_conf: str | None = None
    client_name: str | None = None
    keyring: str | None = None

    def __str__(self) -> str:
        return f"{self.client_name or 'client.admin'} of {self.ceph_conf or 'the default ceph.conf'}"


@dataclass(frozen=True)
class RbdImage:
    """Backstore "rbd"'s image: `pool`/`name`, reached as `client`."""

    pool: str
    name: str
    client: CephClient = CephClient()

    def __str__(self) -> str:
        return f"{self.pool}/{self.name}"
