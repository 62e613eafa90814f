"""Who may log in where: each target's initiator ACL and CHAP credentials, discovery CHAP, connection caps.

Built once per worker from the configuration; the login state machine asks it, SendTargets filters by it.
Credentials are any objects with `username` and `secret` (str) attributes (the config's ChapConfig).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Config


class Credentials(Protocol):
    """One direction of CHAP: a name and the secret that goes with it (the config's ChapConfig)."""

    @property
    def username(self) -> str: ...

    @property
    def secret(self) -> str: ...


@dataclass(frozen=True)
class TargetAccess:
    """What an initiator must be and prove to use one target (or the discovery service)."""
    alias: str | None = None
    allowed_initiators: frozenset[str] | None = None     # None: everyone; names are lower case
    chap: Credentials | None = None                       # the initiator authenticates to us
    mutual_chap: Credentials | None = None                # we authenticate back

    def allows(self, initiator_name: str) -> bool:
        return self.allowed_initiators is None or initiator_name.lower() in self.allowed_initiators


def _admit_everyone(initiator_name: str) -> int:
    return 0


@dataclass
class AccessPolicy:
    """The portal group's targets and rules. `admit(initiator_name)` returns 0, or the login status class
    and detail refusing one more connection (the host's connection caps)."""
    portal_group_tag: int
    targets: dict[str, TargetAccess]
    discovery: TargetAccess = TargetAccess()
    admit: Callable[[str], int] = field(default=_admit_everyone)

    @classmethod
    def from_config(cls, config: Config, portal_group_tag: int,
                    admit: Callable[[str], int] = _admit_everyone) -> AccessPolicy:
        targets = {t.iqn: TargetAccess(t.alias, None if t.allowed_initiators is None
                                       else frozenset(t.allowed_initiators), t.auth.chap, t.auth.mutual_chap)
                   for t in config.targets}
        discovery = TargetAccess(None, None, config.discovery.chap, config.discovery.mutual_chap)
        return cls(portal_group_tag, targets, discovery, admit)

    def visible(self, initiator_name: str) -> dict[str, str | None]:
        """iqn -> alias of the targets this initiator may log in to (what SendTargets reports)."""
        return {iqn: t.alias for iqn, t in self.targets.items() if t.allows(initiator_name)}
