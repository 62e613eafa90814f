"""Where a node's coordinator listens: ZeroMQ ipc:// endpoints under the node's `server.state_dir`.

    coordinator.sock   ROUTER for the node's workers (DEALER each)
    control.sock       ROUTER for control clients (`ringtgt sessions` …): plain requests, no pushes
"""
from __future__ import annotations

import os

WORKERS_SOCKET = "coordinator.sock"
CONTROL_SOCKET = "control.sock"
MAX_IPC_PATH = 107      # sun_path is 108 bytes with its terminating NUL
SEND_QUEUE = 100_000    # messages ZeroMQ queues per peer (send high-water mark) before it drops or refuses


def check_state_dir(state_dir: str) -> None:
    """ValueError when the sockets' paths under `state_dir` would not fit a unix socket address."""
    path = os.path.join(os.path.abspath(state_dir), max(WORKERS_SOCKET, CONTROL_SOCKET, key=len))
    if len(os.fsencode(path)) > MAX_IPC_PATH:
        raise ValueError(f"the coordinator's socket path {path} is longer than {MAX_IPC_PATH} bytes; "
                         "choose a shorter directory")


def _endpoint(state_dir: str, name: str) -> str:
    check_state_dir(state_dir)
    return f"ipc://{os.path.join(os.path.abspath(state_dir), name)}"


def workers_endpoint(state_dir: str) -> str:
    return _endpoint(state_dir, WORKERS_SOCKET)


def control_endpoint(state_dir: str) -> str:
    return _endpoint(state_dir, CONTROL_SOCKET)
