"""SendTargets (RFC 7143 §13.12, Appendix C): which targets to report, at which address."""
from __future__ import annotations

from .names import is_iscsi_name
from .pdu import REJECT_PROTOCOL_ERROR
from .text_exchange import TextRefused


def format_address(address: tuple[str, int], portal_group_tag: int) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port},{portal_group_tag}"


def send_targets(value: str, targets: dict[str, str | None], session_target: str | None,
                 local_address: tuple[str, int], portal_group_tag: int) -> list[tuple[str, str]]:
    """Answer `SendTargets=value`: All (discovery sessions), a target name, or empty (this session's target).

    A value that is none of these (`Alle`) is refused, as LIO refuses it, so that the initiator learns it erred;
    a well-formed iSCSI name this initiator may not see gets the same empty list as one that does not exist,
    which tells it nothing about the targets it is not allowed to know."""
    if value == "All":
        names = list(targets) if session_target is None else [session_target]
    elif value == "":
        names = [session_target] if session_target else []
    else:
        name = value.lower()
        if not is_iscsi_name(name):
            raise TextRefused(REJECT_PROTOCOL_ERROR, f"SendTargets={value[:80]!r}: neither All nor an iSCSI name")
        names = [name] if name in targets else []
    answers = []
    for name in names:
        answers.append(("TargetName", name))
        answers.append(("TargetAddress", format_address(local_address, portal_group_tag)))
    return answers
