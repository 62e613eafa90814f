"""A minimal iSCSI initiator for protocol tests (RFC 7143), independent of target/iscsi.

Blocking sockets, one connection per `Initiator`, ErrorRecoveryLevel 0, CRC32C header/data digests when
negotiated, CHAP (one-way and mutual).  It speaks just enough
of the protocol to drive a target through login, discovery, SCSI reads and writes (immediate data,
unsolicited Data-Out and R2T-solicited Data-Out), NOP-Out pings and logout — and it can send any bytes at
all with `send_raw` / `send_pdu`, for the edge cases.  It checks what comes back (tags, offsets, DataSN)
and raises `ProtocolError` when the target breaks the rules.

    with Initiator.connect("127.0.0.1", 3260) as ini:
        ini.login("iqn.2026-11.org.ringtgt:test")
        result = ini.read(lun=0, lba=0, blocks=8, block_size=512)
        assert result.status == GOOD
"""
from __future__ import annotations

import hashlib
import os
import socket
import struct
from dataclasses import dataclass, field

import crc32c

# Initiator opcodes
NOP_OUT, SCSI_COMMAND, TASK_MGMT, LOGIN_REQUEST, TEXT_REQUEST, DATA_OUT, LOGOUT_REQUEST = 0, 1, 2, 3, 4, 5, 6
# Target opcodes
NOP_IN, SCSI_RESPONSE, TASK_MGMT_RESPONSE, LOGIN_RESPONSE, TEXT_RESPONSE = 0x20, 0x21, 0x22, 0x23, 0x24
DATA_IN, LOGOUT_RESPONSE, R2T, ASYNC_MESSAGE, REJECT = 0x25, 0x26, 0x31, 0x32, 0x3F

RESERVED_TAG = 0xFFFFFFFF
SECURITY, OPERATIONAL, FULL_FEATURE = 0, 1, 3

# SCSI status and sense keys used by the tests
GOOD, CHECK_CONDITION = 0x00, 0x02
ILLEGAL_REQUEST, UNIT_ATTENTION = 0x05, 0x06

# Keys this initiator offers in the operational stage unless the caller overrides them.
DEFAULT_OPERATIONAL_KEYS = {
    "HeaderDigest": "None",
    "DataDigest": "None",
    "MaxRecvDataSegmentLength": "262144",
    "MaxBurstLength": "262144",
    "FirstBurstLength": "65536",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "MaxOutstandingR2T": "1",
    "MaxConnections": "1",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "ErrorRecoveryLevel": "0",
    "DefaultTime2Wait": "0",
    "DefaultTime2Retain": "0",
}
# RFC 7143 defaults, in force for any key the login did not settle.
RFC_DEFAULTS = {
    "MaxRecvDataSegmentLength": "8192",
    "MaxBurstLength": "262144",
    "FirstBurstLength": "65536",
    "InitialR2T": "Yes",
    "ImmediateData": "Yes",
    "MaxOutstandingR2T": "1",
}

_BHS = struct.Struct(">BBBBB3s8sI28s")  # opcode, flags, b2, b3, TotalAHSLength, DSL, LUN/ISID, ITT, rest
_U32 = struct.Struct(">I")
CHAP_HASHES = {"5": "md5", "6": "sha1", "7": "sha256", "8": "sha3_256"}


def digest(data: bytes) -> bytes:
    """An iSCSI CRC32C digest as it travels (RFC 7143 §13.1: the CRC's bytes, least significant first)."""
    return crc32c.crc32c(data).to_bytes(4, "little")


def chap_response(algorithm: str, identifier: int, secret: str, challenge: bytes) -> bytes:
    return hashlib.new(CHAP_HASHES[algorithm], bytes([identifier]) + secret.encode() + challenge).digest()


class ProtocolError(Exception):
    """The target sent something RFC 7143 does not allow here."""


class ConnectionClosed(Exception):
    """The target closed (or reset) the connection."""


class LoginFailed(Exception):
    def __init__(self, response: Pdu):
        self.response = response
        self.status_class, self.status_detail = response.bhs[36], response.bhs[37]
        super().__init__(f"login rejected: status class {self.status_class:#x} detail {self.status_detail:#x}")


# --------------------------------------------------------------------------------------------- PDUs

@dataclass
class Pdu:
    """One PDU as it travels: a 48-byte basic header segment, optional AHS and the (unpadded) data."""
    bhs: bytes
    data: bytes = b""
    ahs: bytes = b""

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def final(self) -> bool:
        return bool(self.bhs[1] & 0x80)

    @property
    def data_segment_length(self) -> int:
        return int.from_bytes(self.bhs[5:8], "big")

    @property
    def itt(self) -> int:
        return self.u32(16)

    def u32(self, offset: int) -> int:
        return _U32.unpack_from(self.bhs, offset)[0]

    # Fields every target PDU except Reject/Async-at-login carries at the same place
    @property
    def ttt(self) -> int:
        return self.u32(20)

    @property
    def stat_sn(self) -> int:
        return self.u32(24)

    @property
    def exp_cmd_sn(self) -> int:
        return self.u32(28)

    @property
    def max_cmd_sn(self) -> int:
        return self.u32(32)

    def encode(self, header_digest: bool = False, data_digest: bool = False) -> bytes:
        header = self.bhs + self.ahs
        data = self.data + padding(len(self.data)) if self.data else b""
        if header_digest:
            header += digest(header)
        if data_digest and data:
            data += digest(data)
        return header + data

    def __repr__(self) -> str:
        return (f"Pdu(opcode={self.opcode:#04x}, flags={self.flags:#04x}, itt={self.itt:#x}, "
                f"dsl={self.data_segment_length}, bhs={self.bhs.hex()})")


def padding(length: int) -> bytes:
    return b"\0" * (-length % 4)


def build_bhs(opcode: int, flags: int, *, immediate: bool = False, b2: int = 0, b3: int = 0,
              data_length: int = 0, lun_or_isid: bytes = bytes(8), itt: int = 0, rest: bytes = b"",
              ahs_words: int = 0) -> bytes:
    """A basic header segment; `rest` is bytes 20..47 (padded with zeroes)."""
    if len(rest) > 28:
        raise ValueError("BHS bytes 20..47 hold 28 bytes")
    return _BHS.pack(opcode | (0x40 if immediate else 0), flags, b2, b3, ahs_words,
                     data_length.to_bytes(3, "big"), lun_or_isid, itt, rest.ljust(28, b"\0"))


def encode_lun(lun: int) -> bytes:
    """SAM LUN field: peripheral addressing below 256, flat space addressing up to 16383."""
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    if lun < 0x4000:
        return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)
    raise ValueError(f"LUN {lun} needs more than flat space addressing")


def encode_text(pairs) -> bytes:
    """Key=value pairs (dict or list of tuples) as a text data segment: each NUL-terminated."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in items)


def decode_text(data: bytes) -> list[tuple[str, str]]:
    pairs = []
    for item in data.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if not sep:
            raise ProtocolError(f"text item without '=': {item!r}")
        pairs.append((key, value))
    return pairs


# ------------------------------------------------------------------------------------- SCSI helpers

@dataclass
class Sense:
    key: int
    asc: int
    ascq: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Sense:
        """Fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data."""
        code = raw[0] & 0x7F if raw else 0
        if code in (0x72, 0x73) and len(raw) >= 4:
            return cls(raw[1] & 0x0F, raw[2], raw[3], raw)
        if code in (0x70, 0x71) and len(raw) >= 14:
            return cls(raw[2] & 0x0F, raw[12], raw[13], raw)
        raise ProtocolError(f"unparseable sense data {raw.hex()}")


@dataclass
class ScsiResult:
    status: int
    response: int = 0
    data: bytes = b""
    sense: Sense | None = None
    residual_overflow: int = 0   # o/O bit set: count not transferred because the buffer was too small
    residual_underflow: int = 0  # u/U bit set: count the target did not transfer
    data_in_pdus: int = 0
    r2ts: list[tuple[int, int]] = field(default_factory=list)  # (buffer offset, desired length) per R2T
    response_pdu: Pdu | None = None


def cdb_read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def cdb_read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def cdb_write10(lba: int, blocks: int, fua: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)


def cdb_write16(lba: int, blocks: int, fua: bool = False) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0x08 if fua else 0, lba, blocks, 0, 0)


def cdb_read_capacity16(alloc: int = 32) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0)


def cdb_inquiry(alloc: int = 255, evpd: bool = False, page: int = 0) -> bytes:
    return struct.pack(">BBBHB", 0x12, 1 if evpd else 0, page, alloc, 0)


CDB_TEST_UNIT_READY = bytes(6)


# ---------------------------------------------------------------------------------------- initiator

class Initiator:
    """One TCP connection, one session (MaxConnections=1)."""

    def __init__(self, sock: socket.socket, *, timeout: float = 30.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.isid = b"\x80" + os.urandom(5)  # type 2 (random) ISID
        self.tsih = 0
        self.cid = 1
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.max_cmd_sn = 1
        self._itt = 0
        self.params: dict[str, str] = {}       # what the login settled (target answers + our declarations)
        self.target_keys: list[tuple[str, str]] = []  # every key the target sent during login, in order
        self.unsolicited: list[Pdu] = []       # async messages and NOP-Ins nobody asked for
        self.full_feature = False
        self.header_digest = False             # CRC32C negotiated (in force after the login)
        self.data_digest = False

    # -- connection
    @classmethod
    def connect(cls, host: str, port: int, *, timeout: float = 30.0) -> Initiator:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Initiator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def next_itt(self) -> int:
        self._itt = (self._itt + 1) & 0x7FFFFFFF
        return self._itt

    # -- raw I/O
    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionClosed(str(exc)) from exc

    def send_pdu(self, pdu: Pdu) -> None:
        self.send_raw(pdu.encode(self.header_digest, self.data_digest))

    def _recv_exact(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining:
            try:
                chunk = self.sock.recv(remaining)
            except ConnectionResetError as exc:
                raise ConnectionClosed(str(exc)) from exc
            if not chunk:
                raise ConnectionClosed(f"EOF after {n - remaining} of {n} bytes")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def recv_pdu(self) -> Pdu:
        """The next PDU from the target, whatever it is (socket timeout → TimeoutError)."""
        bhs = self._recv_exact(48)
        ahs = self._recv_exact(bhs[4] * 4) if bhs[4] else b""
        if self.header_digest and self._recv_exact(4) != digest(bhs + ahs):
            raise ProtocolError(f"header digest error on {bhs.hex()}")
        dsl = int.from_bytes(bhs[5:8], "big")
        padded = self._recv_exact(dsl + (-dsl % 4)) if dsl else b""
        if self.data_digest and dsl and self._recv_exact(4) != digest(padded):
            raise ProtocolError(f"data digest error on the data of {bhs.hex()}")
        data = padded[:dsl]
        pdu = Pdu(bhs, data, ahs)
        if pdu.opcode not in (LOGIN_RESPONSE, REJECT) or self.full_feature:
            self._track_sn(pdu)
        return pdu

    def wait_closed(self) -> bytes:
        """Read until the target closes the connection; return whatever came before the close."""
        received = []
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return b"".join(received)
            if not chunk:
                return b"".join(received)
            received.append(chunk)

    def _track_sn(self, pdu: Pdu) -> None:
        op = pdu.opcode
        if op in (NOP_IN, SCSI_RESPONSE, TASK_MGMT_RESPONSE, TEXT_RESPONSE, LOGOUT_RESPONSE, R2T,
                  ASYNC_MESSAGE, REJECT, DATA_IN, LOGIN_RESPONSE):
            self.max_cmd_sn = pdu.max_cmd_sn
        # StatSN advances only on PDUs that carry status (Data-In only with the S bit)
        carries_status = op != R2T and not (op == DATA_IN and not pdu.flags & 0x01)
        if op == NOP_IN and pdu.itt == RESERVED_TAG:
            carries_status = False  # unsolicited NOP-In: StatSN not advanced
        if carries_status:
            self.exp_stat_sn = (pdu.stat_sn + 1) & 0xFFFFFFFF

    def recv_answer(self, itt: int) -> Pdu:
        """The next PDU for `itt`, or a Reject; answers target NOP-In pings and keeps async messages."""
        while True:
            pdu = self.recv_pdu()
            if pdu.opcode == REJECT:
                return pdu
            if pdu.opcode == NOP_IN and pdu.itt == RESERVED_TAG:
                self.unsolicited.append(pdu)
                if pdu.ttt != RESERVED_TAG:
                    self._answer_ping(pdu)
                continue
            if pdu.opcode == ASYNC_MESSAGE:
                self.unsolicited.append(pdu)
                continue
            if pdu.itt != itt:
                raise ProtocolError(f"expected an answer for ITT {itt:#x}, got {pdu!r}")
            return pdu

    def _answer_ping(self, nop_in: Pdu) -> None:
        rest = _U32.pack(nop_in.ttt) + struct.pack(">II", self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(Pdu(build_bhs(NOP_OUT, 0x80, immediate=True, lun_or_isid=nop_in.bhs[8:16],
                                    itt=RESERVED_TAG, rest=rest)))

    # -- login
    def login_request(self, keys, *, csg: int, nsg: int, transit: bool = True, itt: int = 0,
                      version_max: int = 0, version_min: int = 0) -> Pdu:
        data = encode_text(keys)
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        isid_tsih = self.isid + self.tsih.to_bytes(2, "big")
        rest = struct.pack(">HHII", self.cid, 0, self.cmd_sn, self.exp_stat_sn)
        return Pdu(build_bhs(LOGIN_REQUEST, flags, immediate=True, b2=version_max, b3=version_min,
                             data_length=len(data), lun_or_isid=isid_tsih, itt=itt, rest=rest), data)

    def _login_exchange(self, keys, csg: int, nsg: int, itt: int, transit: bool = True) -> Pdu:
        """One Login Request / Response; the response must be a success in stage `csg`."""
        self.send_pdu(self.login_request(keys, csg=csg, nsg=nsg, itt=itt, transit=transit))
        response = self.recv_pdu()
        if response.opcode != LOGIN_RESPONSE:
            raise ProtocolError(f"expected a Login Response, got {response!r}")
        if response.bhs[36] != 0:
            raise LoginFailed(response)
        if response.itt != itt:
            raise ProtocolError(f"login response ITT {response.itt:#x} != {itt:#x}")
        self.exp_stat_sn = (response.stat_sn + 1) & 0xFFFFFFFF
        self.max_cmd_sn = response.max_cmd_sn
        if response.flags & 0x40:
            raise ProtocolError("login response continuation (C bit) not supported by this initiator")
        answered = decode_text(response.data)
        self.target_keys.extend(answered)
        self.params.update(answered)
        got_csg = (response.flags >> 2) & 3
        if got_csg != csg:
            raise ProtocolError(f"login response CSG {got_csg} != {csg}")
        if response.flags & 0x80 and not transit:
            raise ProtocolError("target transited although the initiator did not ask to")
        return response

    def _login_stage(self, keys, csg: int, nsg: int, itt: int | None = None) -> Pdu:
        """Exchange login PDUs in stage `csg` until the target agrees to move to `nsg`."""
        itt = self.next_itt() if itt is None else itt
        while True:
            response = self._login_exchange(keys, csg, nsg, itt)
            if response.flags & 0x80:
                got_nsg = response.flags & 3
                if got_nsg != nsg:
                    raise ProtocolError(f"login response NSG {got_nsg}, wanted {nsg}")
                self.tsih = int.from_bytes(response.bhs[14:16], "big")
                return response
            # Target wants another round in this stage: offer nothing new, keep asking to transit.
            keys = []

    def _chap(self, security, chap: tuple[str, str], mutual_chap: tuple[str, str] | None,
              algorithms: str) -> None:
        """The security stage with AuthMethod=CHAP (RFC 7143 §12.1.3), mutual if `mutual_chap` is given:
        (name, secret) we expect the target to prove."""
        itt = self.next_itt()
        answer = dict(decode_text(self._login_exchange(security, SECURITY, OPERATIONAL, itt, False).data))
        if answer.get("AuthMethod") != "CHAP":
            raise ProtocolError(f"target chose AuthMethod={answer.get('AuthMethod')}")
        answer = dict(decode_text(self._login_exchange([("CHAP_A", algorithms)], SECURITY, OPERATIONAL, itt,
                                                       False).data))
        algorithm, identifier = answer["CHAP_A"], int(answer["CHAP_I"])
        challenge = bytes.fromhex(answer["CHAP_C"][2:])
        keys = [("CHAP_N", chap[0]), ("CHAP_R", "0x" + chap_response(algorithm, identifier, chap[1],
                                                                      challenge).hex())]
        if mutual_chap is not None:
            my_id, my_challenge = os.urandom(1)[0], os.urandom(16)
            keys += [("CHAP_I", str(my_id)), ("CHAP_C", "0x" + my_challenge.hex())]
        response = self._login_exchange(keys, SECURITY, OPERATIONAL, itt)
        if mutual_chap is not None:
            answer = dict(decode_text(response.data))
            expected = chap_response(algorithm, my_id, mutual_chap[1], my_challenge).hex()
            if answer.get("CHAP_N") != mutual_chap[0] or answer.get("CHAP_R", "")[2:].lower() != expected:
                raise ProtocolError(f"mutual CHAP: the target did not prove its secret: {answer}")
        if not response.flags & 0x80:
            self._login_stage([], SECURITY, OPERATIONAL, itt)
        else:
            self.tsih = int.from_bytes(response.bhs[14:16], "big")

    def login(self, target_name: str | None, *,
              initiator_name: str = "iqn.2026-11.org.ringtgt:pytest-initiator",
              operational: dict | None = None, extra_keys: list[tuple[str, str]] = (),
              session_type: str = "Normal", chap: tuple[str, str] | None = None,
              mutual_chap: tuple[str, str] | None = None, chap_algorithms: str = "7,6,5") -> dict[str, str]:
        """Security stage (AuthMethod=None, or CHAP with `chap`=(name, secret)) → operational stage → full
        feature phase.

        `operational` overrides DEFAULT_OPERATIONAL_KEYS (a value of None drops the key);
        `extra_keys` go out verbatim in the operational stage (e.g. an unknown key).
        Returns the settled parameters (RFC defaults overlaid with the target's answers and our
        declarative MaxRecvDataSegmentLength under the key 'InitiatorMaxRecvDataSegmentLength')."""
        security = [("InitiatorName", initiator_name), ("SessionType", session_type)]
        if target_name is not None:
            security.append(("TargetName", target_name))
        self.params = dict(RFC_DEFAULTS)
        if chap is not None:
            self._chap(security + [("AuthMethod", "CHAP,None")], chap, mutual_chap, chap_algorithms)
        else:
            self._login_stage(security + [("AuthMethod", "None")], SECURITY, OPERATIONAL)
        offered = dict(DEFAULT_OPERATIONAL_KEYS)
        offered.update(operational or {})
        op_keys = [(k, v) for k, v in offered.items() if v is not None] + list(extra_keys)
        self._offered = dict(op_keys)
        # Keys the target does not answer keep what we offered only when declarative; for the
        # negotiated ones the RFC default stands (RFC 7143 §6.2 — an unanswered offer is not agreed).
        self._login_stage(op_keys, OPERATIONAL, FULL_FEATURE)
        self.full_feature = True
        self.header_digest = self.params.get("HeaderDigest") == "CRC32C"
        self.data_digest = self.params.get("DataDigest") == "CRC32C"
        self.params["InitiatorMaxRecvDataSegmentLength"] = self._offered.get(
            "MaxRecvDataSegmentLength", "8192")
        return self.params

    # -- full feature phase helpers
    def _flag(self, key: str) -> bool:
        return self.params.get(key, RFC_DEFAULTS.get(key, "No")) == "Yes"

    def _int(self, key: str) -> int:
        return int(self.params.get(key, RFC_DEFAULTS[key]))

    @property
    def target_mrdsl(self) -> int:
        """The most data the target will take in one PDU (its declared MaxRecvDataSegmentLength)."""
        return self._int("MaxRecvDataSegmentLength")

    def _take_cmd_sn(self, immediate: bool) -> int:
        sn = self.cmd_sn
        if not immediate:
            self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return sn

    def command_pdu(self, cdb: bytes, *, lun: int = 0, read_length: int = 0, write_length: int = 0,
                    immediate_data: bytes = b"", itt: int | None = None, final: bool = True,
                    immediate: bool = False, cmd_sn: int | None = None) -> Pdu:
        """A SCSI Command PDU (takes a CmdSN unless `cmd_sn` is given)."""
        itt = self.next_itt() if itt is None else itt
        flags = (0x80 if final else 0) | (0x40 if read_length else 0) | (0x20 if write_length else 0) | 1
        edtl = write_length or read_length
        sn = self._take_cmd_sn(immediate) if cmd_sn is None else cmd_sn
        rest = struct.pack(">III", edtl, sn, self.exp_stat_sn) + cdb.ljust(16, b"\0")
        return Pdu(build_bhs(SCSI_COMMAND, flags, immediate=immediate, data_length=len(immediate_data),
                             lun_or_isid=encode_lun(lun), itt=itt, rest=rest), immediate_data)

    def data_out_pdu(self, itt: int, ttt: int, data: bytes, *, offset: int, data_sn: int, final: bool,
                     lun: int = 0) -> Pdu:
        rest = struct.pack(">IIIIII", ttt, 0, self.exp_stat_sn, 0, data_sn, offset)
        return Pdu(build_bhs(DATA_OUT, 0x80 if final else 0, data_length=len(data),
                             lun_or_isid=encode_lun(lun), itt=itt, rest=rest), data)

    def _send_data_out_sequence(self, itt: int, ttt: int, data: bytes, start: int, length: int,
                                lun: int) -> None:
        """Data-Out PDUs covering data[start:start+length], each at most the target's MRDSL."""
        step, data_sn, end = self.target_mrdsl, 0, start + length
        for offset in range(start, end, step):
            chunk = data[offset:min(offset + step, end)]
            self.send_pdu(self.data_out_pdu(itt, ttt, chunk, offset=offset, data_sn=data_sn,
                                            final=offset + step >= end, lun=lun))
            data_sn += 1

    def scsi(self, cdb: bytes, *, lun: int = 0, read_length: int = 0, data_out: bytes = b"") -> ScsiResult:
        """Run one SCSI command to completion: write path per the negotiated ImmediateData /
        InitialR2T / FirstBurstLength, answering every R2T; read path collecting Data-In in order."""
        itt = self.next_itt()
        first_burst = min(self._int("FirstBurstLength"), len(data_out))
        immediate = data_out[:min(first_burst, self.target_mrdsl)] if self._flag("ImmediateData") else b""
        unsolicited_end = len(immediate)
        if data_out and not self._flag("InitialR2T"):
            unsolicited_end = first_burst
        self.send_pdu(self.command_pdu(cdb, lun=lun, read_length=read_length, write_length=len(data_out),
                                       immediate_data=immediate, itt=itt,
                                       final=unsolicited_end == len(immediate)))
        if unsolicited_end > len(immediate):
            self._send_data_out_sequence(itt, RESERVED_TAG, data_out, len(immediate),
                                         unsolicited_end - len(immediate), lun)
        return self._collect(itt, lun, data_out, read_length)

    def _collect(self, itt: int, lun: int, data_out: bytes, read_length: int) -> ScsiResult:
        buf = bytearray(read_length)
        result = ScsiResult(status=-1)
        expected_data_sn, next_offset, expected_r2t_sn = 0, 0, 0
        while True:
            pdu = self.recv_answer(itt)
            op = pdu.opcode
            if op == REJECT:
                raise ProtocolError(f"command ITT {itt:#x} rejected: reason {pdu.bhs[2]:#x}")
            if op == R2T:
                r2t_sn, offset, length = struct.unpack_from(">III", pdu.bhs, 36)
                if r2t_sn != expected_r2t_sn:
                    raise ProtocolError(f"R2TSN {r2t_sn}, expected {expected_r2t_sn}")
                if not data_out or offset + length > len(data_out) or length == 0:
                    raise ProtocolError(f"R2T offset {offset} length {length} outside {len(data_out)} bytes")
                if length > self._int("MaxBurstLength"):
                    raise ProtocolError(f"R2T desired length {length} > MaxBurstLength")
                expected_r2t_sn += 1
                result.r2ts.append((offset, length))
                self._send_data_out_sequence(itt, pdu.ttt, data_out, offset, length, lun)
            elif op == DATA_IN:
                data_sn, offset = struct.unpack_from(">II", pdu.bhs, 36)
                if data_sn != expected_data_sn:
                    raise ProtocolError(f"Data-In DataSN {data_sn}, expected {expected_data_sn}")
                if offset != next_offset:
                    raise ProtocolError(f"Data-In buffer offset {offset}, expected {next_offset}")
                if offset + len(pdu.data) > read_length:
                    raise ProtocolError(f"Data-In past the expected transfer length {read_length}")
                if len(pdu.data) > int(self.params.get("InitiatorMaxRecvDataSegmentLength", 8192)):
                    raise ProtocolError(f"Data-In of {len(pdu.data)} bytes > our MaxRecvDataSegmentLength")
                buf[offset:offset + len(pdu.data)] = pdu.data
                expected_data_sn += 1
                next_offset = offset + len(pdu.data)
                result.data_in_pdus += 1
                if pdu.flags & 0x01:  # S bit: status in the final Data-In
                    if not pdu.final:
                        raise ProtocolError("Data-In with S bit but without F bit")
                    result.status = pdu.bhs[3]
                    self._residuals(result, pdu)
                    result.data = bytes(buf[:next_offset])
                    result.response_pdu = pdu
                    return result
            elif op == SCSI_RESPONSE:
                result.response = pdu.bhs[2]
                result.status = pdu.bhs[3]
                self._residuals(result, pdu)
                if len(pdu.data) >= 2:
                    sense_len = int.from_bytes(pdu.data[:2], "big")
                    if sense_len:
                        result.sense = Sense.parse(pdu.data[2:2 + sense_len])
                result.data = bytes(buf[:next_offset])
                result.response_pdu = pdu
                return result
            else:
                raise ProtocolError(f"unexpected PDU for a SCSI command: {pdu!r}")

    @staticmethod
    def _residuals(result: ScsiResult, pdu: Pdu) -> None:
        residual = pdu.u32(44)
        if pdu.flags & 0x04:
            result.residual_overflow = residual
        if pdu.flags & 0x02:
            result.residual_underflow = residual

    # -- convenience commands
    def read(self, lba: int, blocks: int, *, block_size: int, lun: int = 0, cdb16: bool = False) -> ScsiResult:
        cdb = (cdb_read16 if cdb16 else cdb_read10)(lba, blocks)
        return self.scsi(cdb, lun=lun, read_length=blocks * block_size)

    def write(self, lba: int, data: bytes, *, block_size: int, lun: int = 0, cdb16: bool = False,
              fua: bool = False) -> ScsiResult:
        if len(data) % block_size:
            raise ValueError("write length must be whole blocks")
        cdb = (cdb_write16 if cdb16 else cdb_write10)(lba, len(data) // block_size, fua)
        return self.scsi(cdb, lun=lun, data_out=data)

    def clear_unit_attentions(self, lun: int = 0, attempts: int = 16) -> None:
        """TEST UNIT READY until GOOD, consuming pending unit attentions (power on, reset …)."""
        for _ in range(attempts):
            result = self.scsi(CDB_TEST_UNIT_READY, lun=lun)
            if result.status == GOOD:
                return
            if not (result.status == CHECK_CONDITION and result.sense and result.sense.key == UNIT_ATTENTION):
                raise ProtocolError(f"TEST UNIT READY: status {result.status:#x} sense {result.sense}")
        raise ProtocolError(f"LUN {lun} still reports unit attentions after {attempts} TEST UNIT READY")

    def read_capacity16(self, lun: int = 0) -> tuple[int, int]:
        """(number of blocks, block size)."""
        result = self.scsi(cdb_read_capacity16(), lun=lun, read_length=32)
        if result.status != GOOD:
            raise ProtocolError(f"READ CAPACITY(16) status {result.status:#x} sense {result.sense}")
        last_lba, block_size = struct.unpack_from(">QI", result.data)
        return last_lba + 1, block_size

    def nop_ping(self, payload: bytes = b"") -> Pdu:
        """NOP-Out with a fresh ITT (immediate); returns the NOP-In answer."""
        itt = self.next_itt()
        rest = struct.pack(">III", RESERVED_TAG, self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(Pdu(build_bhs(NOP_OUT, 0x80, immediate=True, data_length=len(payload), itt=itt,
                                    rest=rest), payload))
        return self.recv_answer(itt)

    def text_pdus(self, text: bytes) -> list[Pdu]:
        """A Text Request carrying `text` and, while the answer is continued (F=0, a TTT), the empty requests that
        fetch the rest: the answers, the last one final (or a Reject)."""
        itt, ttt, answers = self.next_itt(), RESERVED_TAG, []
        while True:
            rest = struct.pack(">III", ttt, self._take_cmd_sn(False), self.exp_stat_sn)
            self.send_pdu(Pdu(build_bhs(TEXT_REQUEST, 0x80, data_length=len(text), itt=itt, rest=rest), text))
            answer = self.recv_answer(itt)
            answers.append(answer)
            if answer.opcode != TEXT_RESPONSE or answer.final:
                return answers
            ttt, text = answer.ttt, b""

    def text(self, pairs) -> list[tuple[str, str]]:
        """Text Request/Response exchange, following continuations (TTT) until F."""
        answers = self.text_pdus(encode_text(pairs))
        if answers[-1].opcode != TEXT_RESPONSE:
            raise ProtocolError(f"expected a Text Response, got {answers[-1]!r}")
        return decode_text(b"".join(answer.data for answer in answers))

    def send_targets(self) -> list[tuple[str, str]]:
        return self.text([("SendTargets", "All")])

    def logout(self, reason: int = 0) -> Pdu:
        """Logout request (reason 0: close the session); returns the Logout Response."""
        itt = self.next_itt()
        rest = struct.pack(">HHII", self.cid, 0, self._take_cmd_sn(True), self.exp_stat_sn)
        self.send_pdu(Pdu(build_bhs(LOGOUT_REQUEST, 0x80 | reason, immediate=True, itt=itt, rest=rest)))
        answer = self.recv_answer(itt)
        if answer.opcode != LOGOUT_RESPONSE:
            raise ProtocolError(f"expected a Logout Response, got {answer!r}")
        return answer
