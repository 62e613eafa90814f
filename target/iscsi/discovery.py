"""SendTargets (RFC 7143 §13.12, Appendix C): which targets to report, at which address."""
from __future__ import annotations


def format_address(address: tuple[str, int], portal_group_tag: int) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port},{portal_group_tag}"


def send_targets(value: str, targets: dict[str, str | None], session_target: str | None,
                 local_address: tuple[str, int], portal_group_tag: int) -> list[tuple[str, str]]:
    """Answer `SendTargets=value`: All (discovery sessions), a target name, or empty (this session's target)."""
    if value == "All":
        names = list(targets) if session_target is None else [session_target]
    elif value == "":
        names = [session_target] if session_target else []
    else:
        names = [value] if value in targets else []
    answers = []
    for name in names:
        answers.append(("TargetName", name))
        answers.append(("TargetAddress", format_address(local_address, portal_group_tag)))
    return answers
