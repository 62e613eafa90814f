"""Tickle ACK and gratuitous ARP bytes, checked field by field and against the checksum rules."""
import socket
import struct

from coordinator.tickle import TICKLE_WINDOW, checksum, garp_frame, tickle_packet


def test_checksum_of_rfc1071_example():
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_tickle_packet():
    packet = tickle_packet("192.0.2.100", 3260, "192.0.2.10", 41234, ident=7)
    assert len(packet) == 40
    version, tos, length, ident, frag, ttl, proto, _, src, dst = struct.unpack(">BBHHHBBH4s4s", packet[:20])
    assert (version, length, ident, frag, ttl, proto) == (0x45, 40, 7, 0x4000, 64, socket.IPPROTO_TCP)
    assert (socket.inet_ntoa(src), socket.inet_ntoa(dst)) == ("192.0.2.100", "192.0.2.10")
    assert checksum(packet[:20]) == 0                                   # a valid header sums to zero
    sport, dport, seq, ack, offset, flags, window, _, urgent = struct.unpack(">HHIIBBHHH", packet[20:])
    assert (sport, dport, seq, ack, offset, flags, window, urgent) == (3260, 41234, 0, 0, 0x50, 0x10,
                                                                       TICKLE_WINDOW, 0)
    pseudo = src + dst + struct.pack(">BBH", 0, socket.IPPROTO_TCP, 20)
    assert checksum(pseudo + packet[20:]) == 0


def test_garp_frame():
    mac = bytes.fromhex("020000000001")
    frame = garp_frame(mac, "192.0.2.100")
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack(">HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac and frame[28:32] == frame[38:42] == socket.inet_aton("192.0.2.100")
