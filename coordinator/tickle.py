"""TCP tickle ACKs and gratuitous ARP, the packets that make a failover quick (the trick ctdb uses).

A client whose target node died sits in TCP retransmission backoff (seconds to tens of seconds) before it tries
again. Once the node's virtual IP is local to a peer, that peer sends the client, for each connection the dead
node held, an ACK from VIP:port with sequence and acknowledgment numbers 0: out of the connection's window, so
the client's stack answers with an ACK of its own, which reaches the new node; its kernel has no such
connection and answers with a RST, and the initiator logs in again at once. A gratuitous ARP tells the
segment where the VIP now lives.

Packet building is pure (`tickle_packet`, `garp_frame`); `send_tickles` and `send_garp` are the thin raw socket
senders (CAP_NET_RAW). IPv4 only.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import struct

TICKLE_WINDOW = 1234            # any non-zero window; ctdb's choice, recognisable in a capture
_IP = struct.Struct(">BBHHHBBH4s4s")
_TCP = struct.Struct(">HHIIBBHHH")
_PSEUDO = struct.Struct(">4s4sBBH")
_ACK = 0x10
_ETH_ARP = struct.Struct(">6s6sHHHBBH6s4s6s4s")
_BROADCAST = b"\xff" * 6


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tickle_packet(source: str, source_port: int, destination: str, destination_port: int,
                  ident: int = 0) -> bytes:
    """An IPv4 packet with a TCP ACK, seq 0, ack 0, from source:port to destination:port."""
    src, dst = ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed
    tcp = _TCP.pack(source_port, destination_port, 0, 0, 5 << 4, _ACK, TICKLE_WINDOW, 0, 0)
    tcp_sum = checksum(_PSEUDO.pack(src, dst, 0, socket.IPPROTO_TCP, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack(">H", tcp_sum) + tcp[18:]
    header = _IP.pack(0x45, 0, _IP.size + len(tcp), ident, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    header = header[:10] + struct.pack(">H", checksum(header)) + header[12:]
    return header + tcp


def garp_frame(mac: bytes, address: str) -> bytes:
    """An Ethernet broadcast of a gratuitous ARP request: `address` is at `mac`."""
    ip = ipaddress.IPv4Address(address).packed
    return _ETH_ARP.pack(_BROADCAST, mac, 0x0806, 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)


def send_tickles(connections: list[tuple[str, int, str, int]]) -> int:
    """Send one tickle per (vip, port, client, client port); the number sent."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for source, source_port, destination, destination_port in connections:
            packet = tickle_packet(source, source_port, destination, destination_port,
                                   int.from_bytes(os.urandom(2), "big"))
            sock.sendto(packet, (destination, 0))
            sent += 1
    return sent


def send_garp(interface: str, address: str) -> None:
    with open(f"/sys/class/net/{interface}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        sock.send(garp_frame(mac, address))
