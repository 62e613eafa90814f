"""A small network for cluster tests: one namespace per member (nodes, client) and a bridge in a namespace of
its own, joined by veth pairs; addresses from 192.0.2.0/24 (TEST-NET-1) only. Everything is created with a
tag unique to this test run and removed on exit, so nothing touches the host's own network. Services of the
host's loopback (the test Ceph cluster) can be relayed to the members' own 127.0.0.1 (`relay_loopback`).
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

RELAY_START = 10.0      # seconds loopback_relay.py has to listen

PREFIX = 24


def run_ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"rtprobe{os.getpid()}"
    try:
        run_ip("netns", "add", name)
    except (RuntimeError, FileNotFoundError) as exc:
        return f"cannot create a network namespace: {exc}"
    run_ip("netns", "del", name)
    return None


class Lab:
    """`members` maps a short member name to its address; `exec(member, argv)` runs inside its namespace."""

    def __init__(self, members: dict[str, str]):
        self.tag = f"rt{os.getpid() % 100000}"
        self.members = members
        self.switch = f"{self.tag}sw"
        self.created: list[str] = []
        self.relays: list[subprocess.Popen] = []

    def namespace(self, member: str) -> str:
        return f"{self.tag}{member}"

    def interface(self, member: str) -> str:
        return f"{member}0"

    def exec(self, member: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(member), *argv]

    def ip(self, member: str, *args: str) -> str:
        return run_ip("-n", self.namespace(member), *args)

    def __enter__(self) -> Lab:
        try:
            self._add_namespace(self.switch)
            run_ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            run_ip("-n", self.switch, "link", "set", "br0", "up")
            for member, address in self.members.items():
                namespace = self._add_namespace(self.namespace(member))
                inside, outside = self.interface(member), f"{self.tag}{member}p"
                run_ip("link", "add", inside, "netns", namespace, "type", "veth", "peer", "name", outside,
                       "netns", self.switch)
                run_ip("-n", self.switch, "link", "set", outside, "master", "br0", "up")
                self.ip(member, "addr", "add", f"{address}/{PREFIX}", "dev", inside)
                self.ip(member, "link", "set", inside, "up")
                self.ip(member, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _add_namespace(self, name: str) -> str:
        run_ip("netns", "add", name)
        self.created.append(name)
        return name

    def __exit__(self, *exc) -> None:
        for relay in self.relays:
            relay.kill()
            relay.wait(10)
        self.relays.clear()
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.created.clear()

    # -- what a test does to the network
    def add_address(self, member: str, address: str) -> None:
        self.ip(member, "addr", "add", f"{address}/{PREFIX}", "dev", self.interface(member))

    def relay_loopback(self, members: list[str], ports: list[int]) -> None:
        """Make `ports` of the host's 127.0.0.1 reachable on 127.0.0.1 inside each of `members` (a relay process,
        tests/e2e/loopback_relay.py, until the lab is removed)."""
        relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("loopback_relay.py")),
                                  ",".join(map(self.namespace, members)), ",".join(map(str, ports))],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.relays.append(relay)
        assert relay.stdout is not None
        ready, _, _ = select.select([relay.stdout], [], [], RELAY_START)
        said = relay.stdout.readline() if ready else ""
        if said.strip() != "ready":
            relay.kill()
            raise RuntimeError(f"loopback relay: not listening within {RELAY_START:g} s: {said}{relay.stdout.read()}")

    def link_down(self, member: str) -> None:
        self.ip(member, "link", "set", self.interface(member), "down")
