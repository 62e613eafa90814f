"""Failover of a two-node cluster, in network namespaces this test builds and removes: a client and nodes a
and b on one bridge (192.0.2.0/24), the VIP first on node a, one backing file per LUN shared by both nodes
like a SAN LUN (the pieces in cluster_lab.py).

fio (libiscsi, verify=crc32c, default error handling) writes through the VIP. Node a's link goes down (so no
RST escapes) and its ringtgt is killed; the VIP moves to node b; with external takeover `ringtgt takeover a`
runs there. fio must finish without an error, node b must list the client's new session, and a persistent
reservation taken through node a must still be there. The VIP moves once the client's TCP retransmission
timer (`ss -o` in its namespace; its keepalive timer when node a had acknowledged everything sent) has at least
SEND_DUE seconds to go: with tickles fio writes again before that timer would fire, without them only after it
fired (the stall tickles cure). Built-in takeover (node b
adds the VIP itself when a falls silent) gets the same checks. Pauses are printed, and asserted against TCP's own
timer, not the clock of a loaded machine.
"""
from __future__ import annotations

import time
from pathlib import Path

from cluster_lab import (CLIENT, FIO_INITIATOR, KEY, NODES, VIP, WRITE_EXCLUSIVE, FIO_RUNTIME, Node, client_script,
                         file_luns, fio_sessions, move_vip, next_send_due, pauses, start_fio, stop_fio)
from harness import poll

import netns

VIP_MOVES_AFTER = 4.0       # seconds after node a dies: the client is deep in retransmission backoff by then
SEND_DUE = 5.0              # ... and the VIP moves once its next retransmission is this far away (6.4 s backoff)


def failover(lab_factory, directory: Path, takeover: str, tickle: bool) -> dict:
    """One failover of node a to node b under fio; the pauses it caused, after checking what must hold."""
    directory.mkdir()
    shared = directory / "shared"
    shared.mkdir()
    with lab_factory() as lab:
        lab.add_address("a", VIP)
        nodes = {name: Node(lab, name, directory, file_luns(shared), takeover) for name in NODES}
        fio = None
        try:
            poll(lambda: nodes["a"].ready("b") and nodes["b"].ready("a"), timeout=30, what="both nodes up")
            assert client_script(lab, "reserve") == [KEY, WRITE_EXCLUSIVE]
            fio, output, log_prefix = start_fio(lab, directory)
            poll(lambda: FIO_INITIATOR in nodes["b"].command("sessions"), timeout=30,
                 what="node b to list fio's session on node a")
            time.sleep(1.5)
            lab.link_down("a")                          # nothing, not even a RST, leaves node a now
            nodes["a"].kill()
            died = time.time()
            if takeover == "external":
                time.sleep(VIP_MOVES_AFTER)
                sockets = [""]

                def far_enough() -> float:
                    due, sockets[0] = next_send_due(lab)
                    return due if due >= SEND_DUE else 0.0
                try:
                    due = poll(far_enough, timeout=60,
                               what=f"the client's next retransmission (or keepalive) to be {SEND_DUE:g} s away")
                except AssertionError as timeout:
                    raise AssertionError(f"{timeout}; the client's sockets last:\n{sockets[0]}") from None
                retransmits = time.time() + due
                moved = move_vip(lab, "b")
                if tickle:
                    said = nodes["b"].command("takeover", "a")
                    assert "1 connections tickled" in said, said
            else:
                moved, retransmits = died, float("inf")
            if tickle:      # fio goes on for seconds after a tickled failover: its new session is listed, alone
                poll(lambda: fio_sessions(nodes["b"]) == [("b", CLIENT)], timeout=60,
                     what="fio's new session on node b, and node a's gone from the table")
            status = fio.wait(FIO_RUNTIME + 90)
            assert f"session of {FIO_INITIATOR}" in nodes["b"].text(), nodes["b"].text()   # untickled: it may
            # reconnect only when TCP gives up, after fio's run time, and log out at once
            text = output.read_text(errors="replace")
            assert status == 0 and "err= 0" in text, f"fio exit {status}:\n{text}\n{nodes['b'].text()}"
            if takeover == "builtin":
                assert f"VIP {VIP}/{netns.PREFIX} is on" in nodes["b"].text(), nodes["b"].text()
            assert client_script(lab, "show") == [KEY, WRITE_EXCLUSIVE]
            return {**pauses(log_prefix, moved), "before_retransmission": retransmits - moved}
        finally:
            stop_fio(fio)
            for node in nodes.values():
                node.stop()
def test_external_takeover_with_and_without_tickles(lab_factory, tmp_path):
    tickled = failover(lab_factory, tmp_path / "tickled", "external", tickle=True)
    untickled = failover(lab_factory, tmp_path / "untickled", "external", tickle=False)
    print(f"failover, VIP moved once the client's next retransmission (or keepalive) was {SEND_DUE:g} s or more away: "
          f"first write completed on node b {tickled['after_move'] * 1000:.0f} ms after the VIP move with `ringtgt "
          f"takeover` and its tickles ({tickled['before_retransmission'] * 1000:.0f} ms before TCP would have "
          f"retransmitted), {untickled['after_move'] * 1000:.0f} ms without (the retransmission was due "
          f"{untickled['before_retransmission'] * 1000:.0f} ms after the move); longest stall "
          f"{tickled['stall']:.2f} s vs {untickled['stall']:.2f} s")
    assert tickled["after_move"] < tickled["before_retransmission"], tickled         # the tickle, not TCP
    assert untickled["after_move"] > untickled["before_retransmission"] - 0.1, untickled   # TCP (ss: ms steps)


def test_builtin_takeover(lab_factory, tmp_path):
    result = failover(lab_factory, tmp_path / "builtin", "builtin", tickle=True)
    print(f"built-in takeover: longest stall {result['stall']:.2f} s, first write on node b "
          f"{result['after_move'] * 1000:.0f} ms after node a died (dead_after = 0.5 s)")
    assert result["stall"] < VIP_MOVES_AFTER, result
