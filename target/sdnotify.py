"""The systemd notification protocol (sd_notify(3)): state lines such as READY=1, STATUS=… and STOPPING=1 sent as
one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET ('@' at its start: an abstract socket name).

Without $NOTIFY_SOCKET (not started by systemd with Type=notify) notify() does nothing. A failed send is logged
once and never stops the caller: the service's state is systemd's business, serving is ours.
"""
import logging
import os
import socket

log = logging.getLogger("ringtgt.sdnotify")


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=serving") in one datagram; False if there is no socket to send to
    or the send failed."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ["NOTIFY_SOCKET"], exc)
        return False
    return True
