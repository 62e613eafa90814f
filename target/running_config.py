"""The running node's configuration, as a file: <state_dir>/running.toml (dump_config's TOML, mode 0600: it holds
the CHAP secrets).

The supervisor writes it at start; the coordinator rewrites it (atomically) when a reload applied; the supervisor
forks every later child (a restarted worker or coordinator) with what it holds, and `ringtgt check-config --diff`
compares a new file with it.
"""
from __future__ import annotations

import os

from .config import Config, ConfigError, dump_config, load_config

RUNNING = "running.toml"


def running_path(state_dir: str) -> str:
    return os.path.join(state_dir, RUNNING)


def save_running(config: Config) -> None:
    """Write `config` as the node's running configuration (write, fsync, rename: never half a file)."""
    path = running_path(config.server.state_dir)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, dump_config(config).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def load_running(state_dir: str) -> Config:
    """The running node's configuration; ConfigError if there is none (no `serve` ever ran with this state_dir)."""
    path = running_path(state_dir)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: missing: no `ringtgt serve` runs with state_dir {state_dir}")
    return load_config(path)
