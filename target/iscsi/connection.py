"""One iSCSI connection, sans-I/O: feed received bytes, collect buffers to send.

Owns every state transition of the connection: login, then the full feature phase (command window, StatSN,
SCSI commands and their data, task management, NOP, text, logout). SCSI commands go to the target's
`execute(task)`; their completions come back through `ScsiTask.done`. The host (the worker) provides the
environment: the access policy (targets, ACLs, CHAP), TSIH allocation, session registry, and a hook to learn
that output is pending; it reports back each batch of output it has sent (`output_sent`).

Output backpressure: a command stays outstanding in the CmdSN window until its response has been sent, and while
the data queued or in flight on the connection exceeds OUTPUT_BOUND the window is frozen (MaxCmdSN stops
advancing) and the host stops reading the socket (`over_output_bound`), so a client that does not read cannot
make the worker hold more than the bound plus the responses of the commands its window already let in.

Write data is bounded by the R2T budget (write_budget.py): a write gets its first R2T only once its whole
data-out fits the connection's budget and the worker's pool (`write_held`, `host.write_pool`); until then it
waits in `write_waiting`, in order of arrival, and earlier writes that complete or are aborted make room.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

from ..buffers import headroom_view
from ..scsi.sense import ABORTED_COMMAND, PROTOCOL_SERVICE_CRC_ERROR, check_condition
from ..scsi.task import GOOD, Barrier, ScsiTask
from . import pdu as P
from . import responses as R
from .command import Command
from .digests import OutputDigests
from .discovery import send_targets
from .errors import LoginFailure, ProtocolError
from .framing import FrameDecoder
from .host import Host, ScsiPort
from .login import COMMAND_WINDOW, Login
from .negotiation import CRC32C, NOT_UNDERSTOOD, SessionParams, encode_text, parse_text
from .sequencing import CommandWindow, serial_lt
from .text_exchange import MAX_KEY_TEXT, TextExchange, TextRefused
from .write_budget import CONNECTION_WRITE_BUDGET

log = logging.getLogger(f"ringtgt.{__name__}")

# Task management function codes and responses (RFC 7143 §11.5-6)
TMF_ABORT_TASK = 1
TMF_ABORT_TASK_SET = 2
TMF_CLEAR_ACA = 3
TMF_CLEAR_TASK_SET = 4
TMF_LUN_RESET = 5
TMF_TARGET_WARM_RESET = 6
TMF_TARGET_COLD_RESET = 7
TMF_TASK_REASSIGN = 8
TMF_COMPLETE = 0
TMF_NO_TASK = 1
TMF_NO_LUN = 2
TMF_REASSIGN_UNSUPPORTED = 4
TMF_NOT_SUPPORTED = 5
TMF_FUNCTION_REJECTED = 255

# Unsent response bytes (SCSI data-in and status, NOP-In echoes) above which the window freezes and the socket is
# not read: a full window of 32 KiB reads; one response bigger than that (up to MaxBurstLength) still goes whole
OUTPUT_BOUND = 4 << 20

# A linked read holds the connection's other output (a NOP-In answer too) until its disk read ends: after one that
# took longer than this, the connection links none for LINK_PAUSE_NS, so that a slow disk cannot keep it waiting
SLOW_LINKED_READ_NS: Final = 50_000_000
LINK_PAUSE_NS: Final = 10_000_000_000

# How `_take` decodes what a receive brought: bytes into the receive buffer, the rest of a big data segment
# (`receive_into_segment`), a header and a segment after it (`receive_ahead`)
_FEED: Final = 0
_FILLED: Final = 1
_AHEAD: Final = 2
_EMPTY: Final = memoryview(b"")
_memoryview: Final = memoryview   # (held here: compiled code looks a builtin up by name at every use)
_NO_RESIDUAL: Final = (0, 0)
_NOTHING_FINISHED: Final[tuple[Command, ...]] = ()
_LINKED_SEND: Final = (0, 0, _NOTHING_FINISHED)  # `_taken`'s entry for a linked send until it completes

LOGOUT_CLOSE_SESSION = 0
LOGOUT_CLOSE_CONNECTION = 1
LOGOUT_RECOVERY_UNSUPPORTED = 2


class HeldResponse:
    """A task management answer waiting for aborted writes' Data-Out (ITTs) and for the target (TARGET_DONE)."""

    __slots__ = ("itt", "function", "response", "waiting")

    def __init__(self, itt: int, function: int) -> None:
        self.itt = itt
        self.function = function
        self.response = TMF_COMPLETE
        self.waiting: set[object] = set()   # TARGET_DONE, aborted Commands, ITTs of writes draining

    def waits_for_target(self, conn: Connection) -> Callable[..., None]:
        """The target's `done(rejected=False)`: rejected when it could not perform the function (no answer from
        the coordinator in time): FUNCTION REJECTED, from which initiators escalate."""
        self.waiting.add(TARGET_DONE)

        def done(rejected: bool = False) -> None:
            if rejected:
                self.response = TMF_FUNCTION_REJECTED
            conn._release(self, TARGET_DONE)
        return done


TARGET_DONE = object()


class Connection:
    """An initiator's connection from first byte to close."""

    def __init__(self, host: Host, local_address: tuple[str, int], peer_address: tuple[str, int]) -> None:
        self.host = host
        self.local_address = local_address
        self.peer_address = peer_address
        self.decoder = FrameDecoder()
        self.login: Login | None = Login(host.access, host.allocate_tsih, host.offers)
        self.out: list[P.Buf] = []
        self._held_output: list[P.Buf] = []  # output held back while the login is being registered (hold_output)
        self.closing = False            # close once `out` has been sent
        self.unsent = 0                 # response bytes queued in `out` or taken and not reported sent
        self._answered = 0              # commands answered in `out`, and their response bytes there
        self._queued = 0
        # (answers, data bytes, commands answered) of each batch taken and not yet sent
        self._taken: deque[tuple[int, int, Sequence[Command]]] = deque()
        self.finished: list[Command] = []      # commands answered in `out`: counted once sent (target/metrics)
        self.arrived = 0                # monotonic ns of the batch being received (receive_data's `now`)
        self.session_key: tuple[str, int, str | None] | None = None
        self.target: ScsiPort | None = None     # the SCSI target of a normal session; None for discovery
        self.nexus = ""
        self.initiator_name = ""
        # The full feature phase's parameters and window, set at its start (`ping` and `output_sent` look at `login`
        # before they use them), typed as set so that the per-PDU path needs no checks for None. Both start as unused
        # ones, not None: compiled (target/compiled.py), a read of a native attribute is not checked
        self.params = SessionParams()
        self.window = CommandWindow(0, 0)
        self.stat_sn = 0
        self.commands: dict[int, Command] = {}
        self.draining: dict[int, Command] = {}  # aborted writes whose solicited Data-Out is still due
        # aborted commands the SCSI layer still runs -> what waits for them to stop
        self.aborted_in_flight: dict[Command, list[Callable[[], None]]] = {}
        self.held_responses: list[HeldResponse] = []
        self.unit_wide: dict[int, tuple[Command, list[Command]]] = {}    # lun -> unit-wide command, those after it
        self.write_pool = host.write_pool       # the worker's share of the R2T budget
        self.write_held = 0                     # bytes of the R2T budget charged to this connection's writes
        self.write_waiting: dict[Command, None] = {}    # writes waiting for budget for their first R2T, in order
        self._next_ttt = 0
        self.ping_ttt: int | None = None    # our outstanding NOP-In ping, if any
        self.activity = True            # something arrived since the last keepalive check
        self.stopping = False           # target shutdown: close as soon as no command is outstanding
        self.digests: OutputDigests | None = None   # CRC32C digests on what we send, once negotiated
        self.text_exchange = TextExchange()
        self.linked: Command | None = None     # a read whose Data-In send is linked to its disk read (below)
        self._linked_sn = 0                     # the StatSN that send carries
        self._linked_read_done = False          # its read is done, its send not yet completed
        self._link_after = 0                    # monotonic ns before which no read is linked (SLOW_LINKED_READ_NS)
        self.owes_linked = False        # that send was cancelled and its read is not done: nothing else goes first
        # `_task_done` bound once (a Normal session's start, `_enter_full_feature`), not once per command: every
        # command's `done`
        self._done: Callable[[ScsiTask], None] = None  # type: ignore[assignment]
        # and `_send_with_read` likewise: a QD1 read's `send_with_read`
        self._with_read: Callable[[ScsiTask, memoryview], tuple[int, memoryview, int, int] | None] | None = None

    # -- input ----------------------------------------------------------------------------------------------
    def receive_data(self, data: P.Buf, now: int = 0) -> None:
        """Take bytes received at `now` (monotonic ns: the arrival time of the commands among them)."""
        self._take(_FEED, data, now)

    def receive_into_segment(self) -> memoryview | None:
        """Where the next receive may go straight to: the rest of a big data segment being gathered (a write's
        data), so that it is not copied out of the receive buffer; then `segment_received`. None: nowhere."""
        return self.decoder.rest_of_segment()

    def header_wanted(self) -> int:
        """How many bytes the next receive should stop at (the rest of a header, so that a big data segment
        after it goes straight into its buffer: FrameDecoder.header_wanted); 0: no limit."""
        return self.decoder.header_wanted()

    def segment_received(self, count: int, now: int = 0) -> None:
        """`count` bytes were received at `now` into what `receive_into_segment` gave."""
        self._take(_FILLED, count, now)

    def receive_ahead(self, tail: memoryview) -> tuple[memoryview, memoryview] | None:
        """While big writes stream in (`header_wanted`): where one receive may take the next header and, straight
        on, a data segment like the last, before what follows goes into `tail` (FrameDecoder.segment_ahead); then
        `ahead_received`. None: take the header alone."""
        decoder = self.decoder
        ahead = decoder.segment_ahead(tail)
        return (decoder.header_space, ahead) if ahead is not None else None

    def ahead_received(self, count: int, now: int = 0) -> None:
        """`count` bytes were received at `now` into what `receive_ahead` gave, header first."""
        self._take(_AHEAD, count, now)

    def _take(self, decode: int, received: Any, now: int) -> None:
        """Decode what was received (`decode`: how, _FEED, _FILLED or _AHEAD: a native call each, compiled, not one
        through a bound method) and handle the PDUs it completes."""
        if self.closing:
            return
        self.activity = True
        self.arrived = now
        decoder = self.decoder
        try:
            if decode == _FEED:
                pdus = decoder.feed(received)
            elif decode == _FILLED:
                pdus = decoder.filled(received)
            else:
                pdus = decoder.header_and_segment(received)
            for pdu in pdus:
                if self.closing:
                    break
                login = self.login
                if login is not None:
                    self._login_pdu(login, pdu)
                else:
                    self._ffp_pdu(pdu)
        except ProtocolError as exc:
            log.warning("%s:%d: protocol error, closing: %s", *self.peer_address, exc)
            self.close()
        if self.out or self.closing:
            self.host.output_ready(self)

    # -- output hold: a login being registered with the coordinator (target/session_sync.py) -------------------
    def hold_output(self) -> None:
        """What is queued now (the final Login Response) waits for `release_output()`, ahead of what follows."""
        self._held_output, self.out = self.out, []

    def release_output(self) -> None:
        if self._held_output:
            self.out[:0] = self._held_output
            self._held_output = []
            self.host.output_ready(self)

    def take_output(self) -> list[P.Buf]:
        """The buffers queued for sending (with their digests, if negotiated); the queue starts empty again.
        The host calls `output_sent()` once the batch has been sent, batches in the order taken."""
        out, self.out = self.out, []
        finished = self.finished
        if finished:                            # the batch takes the list; an empty batch gets none of its own
            self.finished = []
        self._taken.append((self._answered, self._queued, finished or _NOTHING_FINISHED))
        self._answered = self._queued = 0
        return out if self.digests is None else self.digests.apply(out)

    def output_sent(self) -> Sequence[Command]:
        """The oldest batch taken went out: its commands are no longer outstanding; returns those it answered.
        Below the bound again, a frozen window opens; if the initiator had reached its end, a NOP-In tells it the
        new MaxCmdSN (§11.19: no answer wanted)."""
        answers, size, finished = self._taken.popleft()
        self.unsent -= size
        if self.login is not None:
            return finished
        window = self.window
        window.outstanding -= answers
        if window.frozen and self.unsent <= OUTPUT_BOUND:
            window.frozen = False
            if not window.closed or self.closing:
                return finished
            self.out.append(R.nop_in(self._seq(False), P.RESERVED_TAG, P.RESERVED_TAG))
            self.host.output_ready(self)
        return finished

    @property
    def over_output_bound(self) -> bool:
        return self.unsent > OUTPUT_BOUND

    def _hold_output(self, size: int) -> None:
        """`size` bytes of responses were queued: past the bound, the window freezes."""
        self._queued += size
        self.unsent += size
        if self.unsent > OUTPUT_BOUND:
            self.window.frozen = True

    def close(self) -> None:
        self.closing = True
        self.decoder.segment_buffer = None      # it refers back to the connection
        self.decoder.drop_ahead()
        self._done = None  # type: ignore[assignment]     # (as it does: no cycle left behind)
        self._with_read = None
        self.write_waiting.clear()
        self.write_pool.withdraw(self)
        for command in self.commands.values():
            command.aborted = True
            if not command.running or command.remote:     # a request to the coordinator is withdrawn
                self._free_write(command)       # those at the disk free theirs when done (_task_done)
        for command in self.draining.values():
            self._free_write(command)
        self.commands.clear()
        self.draining.clear()
        self.held_responses.clear()
        self.unit_wide.clear()
        if self.target is not None:
            self.target.detach(self.nexus, self)
        self.host.output_ready(self)

    def abort_lun(self, lun: int, done: Callable[[], None]) -> bool:
        """Abort this nexus's tasks on `lun` without a response (another nexus's PREEMPT AND ABORT, CLEAR TASK
        SET or LUN RESET); `done()` once those the SCSI layer was running have stopped. True if there were any."""
        aborted = [c for c in self.commands.values() if c.lun == lun]
        stopped = Barrier(done)
        self._abort(aborted, stopped=stopped)
        stopped.release()
        if aborted:
            self._after_abort()
        return bool(aborted)

    def _after_abort(self) -> None:
        if self.stopping and not self.commands:
            self.close()
        self.host.output_ready(self)

    def stop_when_idle(self) -> None:
        """Graceful shutdown: finish the commands in flight, then close."""
        self.stopping = True
        if not self.commands:
            self.close()

    def _seq(self, advance: bool = True) -> tuple[int, int, int]:
        """(StatSN, ExpCmdSN, MaxCmdSN) for an outgoing PDU; `advance` consumes a StatSN."""
        stat_sn = self.stat_sn
        if advance:
            self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF
        window = self.window
        return stat_sn, window.exp_cmd_sn, window.announce()

    def _reject(self, pdu: P.Pdu, reason: int) -> None:
        self.out.append(R.reject(self._seq(), reason, pdu.header))

    # -- login phase ----------------------------------------------------------------------------------------
    def _login_pdu(self, login: Login, pdu: P.Pdu) -> None:
        if pdu.opcode != P.LOGIN_REQUEST:
            raise ProtocolError(f"opcode 0x{pdu.opcode:02x} before login completed")
        try:
            response = login.receive(pdu)  # type: ignore[arg-type]   # a LoginRequest: its opcode, above
        except LoginFailure as failure:
            log.warning("%s:%d: login failed (0x%04x): %s", *self.peer_address, failure.status, failure)
            self.out.append(login.failure_response(failure))
            self.closing = True
            return
        self.out.append(response)
        if login.done:
            self._enter_full_feature(login)

    def _enter_full_feature(self, login: Login) -> None:
        self.login = None
        self.params = login.params
        header, data = login.params.header_digest == CRC32C, login.params.data_digest == CRC32C
        if header or data:          # from the next PDU on: the final Login Response, queued, goes without
            self.decoder.use_digests(header, data)
            self.digests = OutputDigests(header, data, skip=sum(len(buf) for buf in self.out))
        self.stat_sn = login.stat_sn
        self.window = CommandWindow(login.cmd_sn, COMMAND_WINDOW)
        self.decoder.max_data_len = login.params.target_max_recv_data_segment_length
        if login.session_type == "Normal":
            self.decoder.segment_buffer = self._segment_buffer
            self._done = self._task_done
            self._with_read = self._send_with_read
        if login.session_type == "Normal":
            assert login.target_name is not None    # a Normal login names its target (Login._check_leading)
            self.target = self.host.scsi_target(login.target_name)
            tpgt = self.host.portal_group_tag
            self.nexus = f"{login.initiator_name},i,0x{login.isid:012x},{login.target_name},t,0x{tpgt:04x}"
        self.initiator_name = login.initiator_name
        self.session_key = (login.initiator_name, login.isid, login.target_name)
        self.tsih = login.tsih
        self.host.session_started(self)
        if self.target is not None:
            self.target.attach(self.nexus, self)
        digests = f", HeaderDigest {login.params.header_digest}, DataDigest {login.params.data_digest}" \
            if self.digests is not None else ""
        log.info("%s:%d: %s session of %s (ISID 0x%012x, TSIH %d) to %s%s", *self.peer_address, login.session_type,
                 login.initiator_name, login.isid, login.tsih, login.target_name or "discovery", digests)

    # -- full feature phase ---------------------------------------------------------------------------------
    def _ffp_pdu(self, pdu: P.Pdu) -> None:
        opcode = pdu.opcode
        if pdu.data_digest_error:
            self._data_digest_error(pdu)
            return
        if opcode == P.DATA_OUT:
            self._data_out(pdu)  # type: ignore[arg-type]     # decode_bhs made a DATA_OUT a DataOut
            return
        handler = _HANDLERS.get(opcode)
        if handler is None:
            self._reject(pdu, P.REJECT_COMMAND_NOT_SUPPORTED if opcode != P.LOGIN_REQUEST
                         else P.REJECT_PROTOCOL_ERROR)
            return
        if opcode == P.NOP_OUT and pdu.itt == P.RESERVED_TAG:
            self._nop_answer(pdu)  # type: ignore[arg-type]   # a reply to our ping: carries no CmdSN to consume
            return
        if pdu.immediate:
            self._handle(pdu)
            return
        window = self.window
        if window.accept(pdu.cmd_sn, pdu):
            self._handle(pdu)
            if window.early:
                for ready in window.released():
                    if self.closing:            # a Logout or a reset closed it: what came early is not run
                        break
                    self._handle(ready)

    def _handle(self, pdu: P.Pdu) -> None:
        """Run a PDU's handler: a SCSI Command's with a native call, compiled (the per-command path), the others'
        through _HANDLERS."""
        if pdu.opcode == P.SCSI_COMMAND:
            self._scsi_command(pdu)  # type: ignore[arg-type]      # decode_bhs made a SCSI_COMMAND a ScsiCommand
        else:
            _HANDLERS[pdu.opcode](self, pdu)

    # SCSI commands --------------------------------------------------------------------------------------------
    def _segment_buffer(self, lun_field: int, length: int) -> memoryview | None:
        """Where the decoder puts a write's big immediate data: straight into a buffer of its unit's pool
        (page-aligned on an O_DIRECT store, which writes from it as it is)."""
        allocate = self.target.data_out_buffers(P.decode_lun(lun_field))  # type: ignore[union-attr]  # Normal
        return allocate(length) if allocate is not None else None

    def _scsi_command(self, pdu: P.ScsiCommand) -> None:
        if self.target is None:
            self._reject(pdu, P.REJECT_PROTOCOL_ERROR)
            return
        if pdu.itt in self.commands:
            self._reject(pdu, P.REJECT_TASK_IN_PROGRESS)
            return
        field = pdu.lun_field
        command = Command(pdu, field >> 48 if not field & P.NOT_SMALL_PERIPHERAL else P.decode_lun(field), self.nexus,
                          self.initiator_name, self._done, self.arrived)
        params = self.params
        if command.write and command.expected_length:
            if pdu.data and not params.immediate_data:
                raise ProtocolError("immediate data sent although ImmediateData=No")
            if len(pdu.data) > params.first_burst_length:
                raise ProtocolError("immediate data exceeds FirstBurstLength")
            more = not params.initial_r2t and not pdu.flags & P.FINAL
            edtl = command.expected_length      # all of it came with the command (within FirstBurstLength): the
            wanted = edtl if len(pdu.data) == edtl else self.target.data_out_length(command.lun, command.cdb)
            command.start_write(pdu.data, params.first_burst_length, more, wanted,  # handler takes what it asks
                                self.target.data_out_buffers(command.lun))
        self.window.outstanding += 1
        self.commands[command.itt] = command
        complete = not command.write or command.complete   # a command without data-out has none to wait for
        if not complete and command.lun not in self.unit_wide and self.target.unit_wide(command.cdb):
            self.unit_wide[command.lun] = (command, [])
        if complete:
            self._execute(command)
        else:
            self._solicit(command)

    def _solicit(self, command: Command) -> None:
        """Send the R2Ts `command` may have outstanding; its first ones once it has budget (`admit_writes`)."""
        if not command.charge:
            if command.awaiting_unsolicited:
                return
            waiting = self.write_waiting
            waiting[command] = None
            if len(waiting) == 1:               # else the writes before it wait for budget: so does it
                self._admit_writes()
            return
        params = self.params
        for ttt, r2t_sn, offset, length in command.next_r2ts(params.max_outstanding_r2t, params.max_burst_length,
                                                             self._new_ttt):
            self.out.append(R.r2t(command.lun_field, command.itt, ttt, self._seq(False), r2t_sn, offset, length))

    def admit_writes(self) -> bool:
        """This connection's turn at the worker's pool (WritePool.release): solicit what fits; True if its next
        write still waits for the pool."""
        waits = self._admit_writes()
        if self.out:
            self.host.output_ready(self)
        return waits

    def _admit_writes(self) -> bool:
        """Charge the waiting writes, first come first, and send their first R2Ts while they fit; True if the
        next one waits for the pool (WritePool.grant queued the connection). A connection that holds nothing
        always gets its next write, and so does a unit-wide command: what it holds may be writes held behind it."""
        waiting, pool = self.write_waiting, self.write_pool
        while waiting:
            command = next(iter(waiting))
            need = command.wanted
            if not self.write_held or self.unit_wide and self.unit_wide.get(command.lun, (None,))[0] is command:
                pool.take(need)
            elif self.write_held + need > CONNECTION_WRITE_BUDGET:
                return False
            elif not pool.grant(self, need):
                return True
            del waiting[command]
            command.charge = need
            self.write_held += need
            self._solicit(command)
        return False

    def _free_write(self, command: Command) -> None:
        """Nothing of `command`'s write data is held any more: its budget goes to the writes waiting here, then
        to other connections waiting for the pool."""
        charge = command.charge
        if not charge:
            return
        command.charge = 0
        self.write_held -= charge
        if self.write_waiting:
            self._admit_writes()
        self.write_pool.release(charge)

    def _new_ttt(self) -> int:
        self._next_ttt = (self._next_ttt + 1) & 0x7FFFFFFF
        return self._next_ttt

    def _data_out(self, pdu: P.DataOut) -> None:
        command = self.commands.get(pdu.itt)
        if command is None and pdu.itt in self.draining:
            self._drain(self.draining[pdu.itt], pdu)
            return
        if command is None or not command.write or command.buffer is None:
            if command is None and pdu.itt != P.RESERVED_TAG:
                return                          # data for an aborted task: drop it (§4.2.3.4)
            raise ProtocolError(f"Data-Out for unknown ITT 0x{pdu.itt:08x}")
        if command.take_data_out(pdu):
            if command.complete:
                self._execute(command)
            else:
                self._solicit(command)

    def _data_digest_error(self, pdu: P.Pdu) -> None:
        """RFC 7143 §7.8 at ErrorRecoveryLevel 0: Reject the PDU and discard it. A Data-Out's data still counts
        towards its sequence, but the command ends with CHECK CONDITION, PROTOCOL SERVICE CRC ERROR once all of
        its data has arrived, and nothing of it reaches the medium."""
        log.warning("%s:%d: data digest error on a PDU with opcode 0x%02x, ITT 0x%08x", *self.peer_address,
                    pdu.opcode, pdu.itt)
        self._reject(pdu, P.REJECT_DATA_DIGEST)
        if pdu.opcode == P.DATA_OUT:
            command = self.commands.get(pdu.itt)
            if command is not None:
                command.corrupt = True
            self._data_out(pdu)  # type: ignore[arg-type]     # decode_bhs made a DATA_OUT a DataOut

    def _execute(self, command: Command) -> None:
        """Hand a command whose data is all here to the SCSI layer, unless a unit-wide one before it still waits
        for its own (`_held`)."""
        if self.unit_wide and self._held(command):
            return
        if command.buffer is not None:
            command.data_out = _memoryview(command.buffer)
        elif command.write:
            command.data_out = _EMPTY
        command.running = True
        if command.corrupt:
            check_condition(command, ABORTED_COMMAND, PROTOCOL_SERVICE_CRC_ERROR)
            return
        if command.read and len(self.commands) == 1 and self.digests is None:
            command.send_with_read = self._with_read
        self.target.execute(command)  # type: ignore[union-attr]  # commands exist in normal sessions only

    # A read's Data-In sent linked to its disk read --------------------------------------------------------------
    # One linked read at a time (`linked`), from its link until both its read is done (`_linked_done`) and its send
    # has completed (`linked_send_completed`), in either order: a read that fails, stops short, or is completed by
    # more reads, cancels the send, and the cancellation may come before or after the read's end. While it lasts the
    # host sends nothing else (its send is in flight, or `owes_linked`). Whether the send answers the read is known
    # from the send's completion only; then the read's answer is accounted for, or built and sent first, with the
    # StatSN the cancelled send carried.
    def _send_with_read(self, task: ScsiTask, view: memoryview) -> tuple[int, memoryview, int, int] | None:
        """`command.send_with_read` (ScsiTask): its Data-In with status, header in `view`'s headroom, for the host
        to send linked to the disk read that fills `view` (`host.send_linked`), so that it leaves the moment the
        disk has the data, without a turn of the loop (a QD1 read's latency). Only while the connection has
        nothing else queued, in flight or running, no earlier linked read unresolved, none slow lately
        (SLOW_LINKED_READ_NS), and the Data-In is one piece: one PDU, no residual, no padding, no digests."""
        command: Command = task  # type: ignore[assignment]     # the tasks a connection hands over are its Commands
        length = len(view)
        params = self.params
        if (self.out or self._taken or self.linked is not None or len(self.commands) != 1 or self.closing
                or command.aborted or command.arrived < self._link_after or length != command.expected_length
                or length & 3 or length > params.max_recv_data_segment_length or length > params.max_burst_length):
            return None
        whole = headroom_view(view)
        if whole is None:
            return None
        stat_sn, window = self.stat_sn, self.window
        R.data_in([], view, command.lun_field, command.itt, (stat_sn, window.exp_cmd_sn, window.announce()),
                  length, length, GOOD, _NO_RESIDUAL)  # its header into `whole`, in front of the data
        send = self.host.send_linked(self, whole)
        if send is not None:
            self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF
            self.linked, self._linked_sn = command, stat_sn
            self._taken.append(_LINKED_SEND)    # the host's send in flight: `linked_send_completed` fills it in
        return send

    def _linked_done(self, command: Command) -> None:
        """The linked read is done (whole, failed, or completed by more reads). An aborted one is answered all the
        same (its answer may be on the wire already), ahead of the TMF's; it is just not counted again."""
        now = time.monotonic_ns()
        if command.arrived and now - command.arrived > SLOW_LINKED_READ_NS:    # (0: the host keeps no time)
            self._link_after = now + LINK_PAUSE_NS
        if not command.aborted:
            del self.commands[command.itt]
        if self.owes_linked:                    # its send was cancelled already
            self._answer_linked(command)
        else:
            self._linked_read_done = True       # the send's completion tells whether it answered it
        for waiter in self.aborted_in_flight.pop(command, ()):
            waiter()                            # a TMF's answer, after this one
        if self.stopping and not self.commands:
            self.close()

    def linked_send_completed(self, cancelled: bool) -> None:
        """The host's linked send completed (its first completion: the rest of a short send goes as any other):
        it sent the read's Data-In, whole (`output_sent` follows), or, `cancelled`, nothing, and the read's answer
        is built now, or once the read is done (`owes_linked` holds the output until then)."""
        command: Command = self.linked  # type: ignore[assignment]    # a linked send is in flight
        if cancelled:
            self._taken.popleft()
            if self._linked_read_done:
                self._answer_linked(command)
            else:
                self.owes_linked = True
            return
        data = command.data_in                  # a send that ran followed a whole read, done before it
        size = len(data) + P.BHS_LEN  # type: ignore[arg-type]
        command.sent, command.data_in = size - P.BHS_LEN, None
        self._taken[0] = (0, size, _NOTHING_FINISHED) if command.aborted else (1, size, (command,))
        self._charge_unsent(size)
        self.linked, self._linked_read_done = None, False

    def _answer_linked(self, command: Command) -> None:
        """The linked read's answer, its send cancelled: first in `out`, with the StatSN that send carried."""
        ok = command.status == GOOD and command.sense is None
        data = command.data_in
        window = self.window
        seq = (self._linked_sn, window.exp_cmd_sn, window.announce())
        front: list[P.Buf] = []
        if ok:
            R.data_in(front, data, command.lun_field, command.itt, seq,  # type: ignore[arg-type]  # read whole
                      self.params.max_recv_data_segment_length, self.params.max_burst_length, GOOD, _NO_RESIDUAL)
            command.sent = len(data)  # type: ignore[arg-type]
        else:
            front.append(R.scsi_response(command.itt, seq, command.status, command.sense, 0, _NO_RESIDUAL))
            command.sent, command.failed_sense = -1, command.sense
        command.data_in = None
        self.out[:0] = front
        size = (command.sent if ok else 0) + P.BHS_LEN
        self._queued += size
        self._charge_unsent(size)
        if not command.aborted:
            self._answered += 1
            self.finished.append(command)
        self.linked, self._linked_read_done, self.owes_linked = None, False, False
        self.host.output_ready(self)

    def _charge_unsent(self, size: int) -> None:
        self.unsent += size
        if self.unsent > OUTPUT_BOUND:
            self.window.frozen = True

    def _held(self, command: Command) -> bool:
        """True if `command` waits behind a unit-wide command, or is that command: it then runs (below), and
        releases those behind it, in order."""
        barrier = self.unit_wide.get(command.lun)
        if barrier is None:
            return False
        if barrier[0] is not command:
            barrier[1].append(command)
        else:
            self._lift(command)
        return True

    def _lift(self, barrier: Command) -> None:
        """The unit-wide `barrier` has its data (or was aborted): run it, then the commands held behind it."""
        _, held = self.unit_wide.pop(barrier.lun)
        for command in [barrier, *held]:
            if not command.aborted:
                self._execute(command)

    def _task_done(self, task: ScsiTask) -> None:
        command: Command = task  # type: ignore[assignment]     # the tasks a connection hands over are its Commands
        command.running = False
        if command is self.linked:
            self._linked_done(command)
            return
        if command.aborted:
            for waiter in self.aborted_in_flight.pop(command, ()):
                waiter()
            quiet = not self.out
            self._free_write(command)           # may solicit a waiting write: an R2T in `out`
            if quiet and self.out:
                self.host.output_ready(self)
            return
        del self.commands[command.itt]
        command.buffer = command.data_out = None    # its pool buffer is free again once the backstore let go of it
        self._answered += 1                     # outstanding until sent (output_sent)
        edtl = command.expected_length
        data = task.data_in
        known = task.transfer_length            # set by commands with data-out, also when they fail
        if data is not None:
            natural = len(data)
        else:
            natural = known if known is not None else (edtl if command.write else 0)
        ok = task.status == GOOD and task.sense is None
        residual = R.residual_flags(natural, edtl) if natural != edtl and (ok or known is not None) \
            else _NO_RESIDUAL
        params = self.params
        out = self.out
        quiet = not out                         # else the host was told of `out` when it stopped being empty
        # min(natural, edtl) written out: the builtins min and max parse their arguments, a few hundred instructions
        sent = (natural if natural < edtl else edtl) if data is not None and command.read else 0
        if sent:
            sending: P.Buf = data  # type: ignore[assignment]    # `sent` is 0 without data
            if sent < natural:
                sending = memoryview(sending)[:sent]
            segment, burst = params.max_recv_data_segment_length, params.max_burst_length
            if ok:                              # self._seq() written out: once per read
                stat_sn = self.stat_sn
                self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF
                window = self.window
                R.data_in(out, sending, command.lun_field, command.itt, (stat_sn, window.exp_cmd_sn, window.announce()),
                          segment, burst, GOOD, residual)
            else:
                count = R.data_in(out, sending, command.lun_field, command.itt, self._seq(False), segment, burst,
                                  None, residual)
                out.append(R.scsi_response(command.itt, self._seq(), task.status, task.sense, count, residual))
        else:
            out.append(R.scsi_response(command.itt, self._seq(), task.status, task.sense, command.r2t_sn, residual))
        if ok:
            command.sent = sent + command.wanted
        else:
            command.sent, command.failed_sense = -1, task.sense
        command.data_in = None                  # `out` has it: the command, kept till sent, does not hold its buffer
        self.finished.append(command)
        size = sent + P.BHS_LEN                 # _hold_output, written out: once per command
        self._queued += size
        self.unsent += size
        if self.unsent > OUTPUT_BOUND:
            self.window.frozen = True
        if command.charge:
            self._free_write(command)
        if self.stopping and not self.commands:
            self.close()
        elif quiet:
            self.host.output_ready(self)

    # Task management --------------------------------------------------------------------------------------
    def _task_management(self, pdu: P.TaskMgmtRequest) -> None:
        """RFC 7143 §11.5 with SAM-5 semantics. The response is held (`HeldResponse`) until the Data-Out that
        aborted writes still owe has arrived (RFC 5048 §4.1.3) and, for resets and CLEAR TASK SET, until every
        worker has applied them (the target's `done` callback)."""
        function = pdu.function
        lun = P.decode_lun(pdu.lun_field)
        held = HeldResponse(pdu.itt, function)
        self.held_responses.append(held)
        target = self.target
        if target is None:
            held.response = TMF_NOT_SUPPORTED
        elif function == TMF_ABORT_TASK:
            command = self.commands.get(pdu.referenced_task_tag)
            if command is not None and command.lun == lun:
                self._abort([command], held)
            elif command is not None or not self._cmd_sn_received(pdu.ref_cmd_sn, pdu.cmd_sn):
                held.response = TMF_NO_TASK
        elif function in (TMF_ABORT_TASK_SET, TMF_CLEAR_TASK_SET, TMF_LUN_RESET):
            if not target.has_lun(lun):
                held.response = TMF_NO_LUN
            else:
                self._abort([c for c in self.commands.values() if c.lun == lun], held)
                if function == TMF_LUN_RESET:
                    target.reset_lun(lun, self.nexus, held.waits_for_target(self))
                elif function == TMF_CLEAR_TASK_SET:
                    target.clear_task_set(lun, self.nexus, held.waits_for_target(self))
        elif function in (TMF_TARGET_WARM_RESET, TMF_TARGET_COLD_RESET):
            self._abort(list(self.commands.values()), held)
            target.reset_target(self.nexus, function == TMF_TARGET_COLD_RESET, held.waits_for_target(self))
        elif function == TMF_TASK_REASSIGN:
            held.response = TMF_REASSIGN_UNSUPPORTED
        elif function != TMF_CLEAR_ACA:
            held.response = TMF_NOT_SUPPORTED
        self._release(held, None)

    def _release(self, held: HeldResponse, waited: object) -> None:
        """One thing `held` waited for is done; answer once nothing is left."""
        held.waiting.discard(waited)
        if held.waiting or held not in self.held_responses:
            return
        self.held_responses.remove(held)
        self.out.append(R.task_management_response(self._seq(), held.response, held.itt))
        if held.function == TMF_TARGET_COLD_RESET and held.response == TMF_COMPLETE:
            self.close()                        # a cold reset ends the session too
        self.host.output_ready(self)

    def _cmd_sn_received(self, ref_cmd_sn: int, tmf_cmd_sn: int) -> bool:
        """RFC 7143 §11.5.1 b): a task we never saw counts as received (Function complete) if its CmdSN is in the
        window (ExpCmdSN … MaxCmdSN) and before the TMF's own. Below ExpCmdSN it ran and was answered already
        (c): Task does not exist, which is what an initiator that saw its response must get."""
        window = self.window
        return (not serial_lt(ref_cmd_sn, window.exp_cmd_sn) and not serial_lt(window.announced, ref_cmd_sn)
                and serial_lt(ref_cmd_sn, tmf_cmd_sn))

    def _abort(self, commands: list[Command], held: HeldResponse | None = None,
               stopped: Barrier | None = None) -> None:
        """Abort without a response. The TMF answer `held` (and `stopped`) wait until each command the SCSI
        layer runs has stopped (a late backstore completion is then dropped; tasks waiting on the coordinator are
        not waited for), and `held` until each write with solicited data outstanding has drained its Data-Out."""
        withdrawn = False
        for command in commands:
            command.aborted = True
            if command in self.write_waiting:
                del self.write_waiting[command]
                withdrawn = True
        for command in commands:
            self.commands.pop(command.itt, None)
            if self.unit_wide.get(command.lun, (None,))[0] is command:
                self._lift(command)
            self.window.outstanding -= 1
            if command.running and not command.remote:
                waiters = self.aborted_in_flight.setdefault(command, [])
                if held is not None:
                    held.waiting.add(command)
                    waiters.append(partial(self._release, held, command))
                if stopped is not None:
                    waiters.append(stopped.hold())
            elif any(burst.r2t_sn >= 0 for burst in command.bursts.values()):
                self.draining[command.itt] = command
                if held is not None:
                    held.waiting.add(command.itt)
            else:
                self._free_write(command)       # not started, or not waited for
        if withdrawn:                           # its turn at the pool, if it had one, was for a write now gone
            self.write_pool.withdraw(self)
            self._admit_writes()

    def _drain(self, command: Command, pdu: P.DataOut) -> None:
        command.take_data_out(pdu)
        if any(burst.r2t_sn >= 0 for burst in command.bursts.values()):
            return
        del self.draining[command.itt]
        self._free_write(command)
        for held in list(self.held_responses):
            self._release(held, command.itt)

    # NOP, text, logout, SNACK -------------------------------------------------------------------------------
    def _nop_out(self, pdu: P.NopOut) -> None:
        self._hold_output(len(pdu.data) + P.BHS_LEN)   # immediate pings are outside the window, not the bound
        self.out.append(R.nop_in(self._seq(), pdu.itt, P.RESERVED_TAG, pdu.lun_field, pdu.data))

    def _nop_answer(self, pdu: P.NopOut) -> None:
        if pdu.ttt == self.ping_ttt:
            self.ping_ttt = None

    def ping(self) -> None:
        """Send a target NOP-In that asks for an answer (keepalive); the host calls this on idle connections."""
        if self.login is not None or self.closing:
            return
        self.ping_ttt = self._new_ttt()
        self.out.append(R.nop_in(self._seq(False), P.RESERVED_TAG, self.ping_ttt))
        self.host.output_ready(self)

    def _text(self, pdu: P.TextRequest) -> None:
        try:
            flags, ttt, text = self.text_exchange.receive(pdu.itt, pdu.ttt, pdu.flags, pdu.data,
                                                          self.params.max_recv_data_segment_length,
                                                          self._text_answer, self._new_ttt)
        except TextRefused as refused:
            log.warning("%s:%d: text request rejected: %s", *self.peer_address, refused)
            self._reject(pdu, refused.reason)
            return
        self.out.append(R.text_response(self._seq(), flags, pdu.lun_field, pdu.itt, ttt, text))

    def _text_answer(self, text: bytes) -> bytes:
        """The answer to a whole text request: SendTargets (discovery.py), once; NotUnderstood for any other key,
        for at most MAX_KEY_TEXT bytes of them (what the answer holds is the target list and that much)."""
        try:
            pairs = parse_text(text)
        except LoginFailure as failure:
            raise TextRefused(P.REJECT_PROTOCOL_ERROR, str(failure)) from None
        if len({key for key, _ in pairs}) < len(pairs):     # RFC 7143 §6.2: no key offered twice
            raise TextRefused(P.REJECT_PROTOCOL_ERROR, "a key offered twice in one text request")
        unknown = encode_text((key, NOT_UNDERSTOOD) for key, _ in pairs if key != "SendTargets")
        if len(unknown) > MAX_KEY_TEXT:
            raise TextRefused(P.REJECT_OUT_OF_RESOURCES, f"{len(pairs)} keys in one text request")
        value = next((value for key, value in pairs if key == "SendTargets"), None)
        if value is None:
            return unknown
        return unknown + encode_text(send_targets(value, self.host.access.visible(self.initiator_name),
                                                  self._target_name(), self.local_address,
                                                  self.host.portal_group_tag))

    def _target_name(self) -> str | None:
        """This normal session's target (what an empty SendTargets reports); None in a discovery session."""
        return self.session_key[2] if self.target is not None and self.session_key is not None else None

    def _logout(self, pdu: P.LogoutRequest) -> None:
        reason = pdu.reason
        response = LOGOUT_RECOVERY_UNSUPPORTED if reason not in (LOGOUT_CLOSE_SESSION, LOGOUT_CLOSE_CONNECTION) else 0
        params = self.params
        self.out.append(R.logout_response(self._seq(), response, pdu.itt, params.default_time2wait,
                                          params.default_time2retain))
        if response == 0:
            self.close()

    def _snack(self, pdu: P.SnackRequest) -> None:
        self._reject(pdu, P.REJECT_SNACK)      # ErrorRecoveryLevel=0: no SNACK support (§11.16)


# A full feature phase handler: _HANDLERS pairs each with its opcode's Pdu subclass (pdu.PDU_CLASSES)
Handler = Callable[[Connection, Any], None]
# (a module global, not a class attribute: CPython 3.11 looks a class attribute up through the instance generically)
_HANDLERS: Final[dict[int, Handler]] = {
    P.NOP_OUT: Connection._nop_out, P.SCSI_COMMAND: Connection._scsi_command,
    P.TASK_MGMT_REQUEST: Connection._task_management, P.TEXT_REQUEST: Connection._text,
    P.LOGOUT_REQUEST: Connection._logout, P.SNACK_REQUEST: Connection._snack,
}
