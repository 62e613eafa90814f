"""Login phase state machine (RFC 7143 §6.3, §11.12-13), sans-I/O.

`Login.receive(pdu)` takes one Login Request and returns the Login Response bytes; when `done` is true the
connection enters the full feature phase with `params` and `session_type`/`target_name`; when a
`LoginFailure` is raised the caller sends `failure_response()` and closes. The legal stage transitions live in
one table; authentication (AuthMethod, then the CHAP exchange of `chap.py`) gates leaving the security stage,
and the access policy (`access.py`) decides who may log in where.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from . import chap as CHAP
from . import pdu as P
from . import responses as R
from .access import AccessPolicy, TargetAccess
from .errors import (LOGIN_AUTH_FAILURE, LOGIN_AUTHORIZATION_FAILURE, LOGIN_INITIATOR_ERROR,
                     LOGIN_INVALID_REQUEST, LOGIN_MISSING_PARAMETER, LOGIN_NOT_FOUND,
                     LOGIN_SESSION_DOES_NOT_EXIST, LOGIN_SESSION_TYPE_UNSUPPORTED, LOGIN_UNSUPPORTED_VERSION,
                     LoginFailure)
from .negotiation import (KEYS, OUR_MAX_RECV_DATA_SEGMENT_LENGTH, REJECT, Key, Negotiator, SessionParams,
                          encode_text, parse_text)
from .text_exchange import MAX_KEY_TEXT, KeyText

SECURITY = 0
OPERATIONAL = 1
FULL_FEATURE = 3

# (current stage, next stage) pairs a Login Request may ask to transit.
TRANSITIONS = frozenset({(SECURITY, OPERATIONAL), (SECURITY, FULL_FEATURE), (OPERATIONAL, FULL_FEATURE)})
SECURITY_KEYS = frozenset({"AuthMethod"}) | CHAP.KEYS
COMMAND_WINDOW = 128
# AuthMethod as this target offers it: CHAP where credentials are configured, else None.
AUTH_METHOD = {False: KEYS["AuthMethod"], True: Key("AuthMethod", "list", None, ("CHAP",))}


class Login:
    """One connection's login: negotiation, stage transitions, TSIH assignment."""

    def __init__(self, access: AccessPolicy, allocate_tsih: Callable[[], int],
                 offers: Mapping[str, object] | None = None) -> None:
        self.access = access
        self.portal_group_tag = access.portal_group_tag
        self.allocate_tsih = allocate_tsih
        self.chap: CHAP.Chap | None = None          # the CHAP exchange the target or discovery requires
        self.auth_method: str | None = None          # what AuthMethod negotiated to
        self.params = SessionParams(target_max_recv_data_segment_length=OUR_MAX_RECV_DATA_SEGMENT_LENGTH)
        self.negotiator = Negotiator(self.params, offers)
        self.stage: int | None = None
        self.first: P.LoginRequest | None = None
        self.pending_text = KeyText()                # key text of continued requests (C bit), joined at the end
        self.declared_ours = False
        self.leading_checked = False
        self.done = False
        self.isid = 0
        self.tsih = 0
        self.stat_sn = 0
        self.cmd_sn = 0
        self.itt = P.RESERVED_TAG

    # -- results ------------------------------------------------------------------------------------------
    @property
    def initiator_name(self) -> str:
        return self.params.declared.get("InitiatorName", "")

    @property
    def session_type(self) -> str:
        return self.params.declared.get("SessionType", "Normal")

    @property
    def target_name(self) -> str | None:
        return self.params.declared.get("TargetName")

    # -- input ----------------------------------------------------------------------------------------------
    def receive(self, req: P.LoginRequest) -> bytes:
        if self.first is None:
            self._start(req)
        elif req.isid != self.isid or req.tsih != self.first.tsih:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, "ISID or TSIH changed during login")
        self.itt = req.itt
        self.cmd_sn = req.cmd_sn
        csg, nsg, transit = req.csg, req.nsg, req.transit
        if csg not in (SECURITY, OPERATIONAL) or (self.stage is not None and csg < self.stage):
            raise LoginFailure(LOGIN_INVALID_REQUEST, f"login request in stage {csg}")
        if transit and (csg, nsg) not in TRANSITIONS:
            raise LoginFailure(LOGIN_INVALID_REQUEST, f"illegal stage transition {csg}->{nsg}")
        if transit and req.cont:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, "T and C bits both set")
        self.stage = csg
        if not self.pending_text.add(req.data):
            # RFC 7143 §11.13.5 class 2, not 3 (out of resources): the same text would be refused again, so the
            # initiator is told not to retry it rather than that the target may manage later
            raise LoginFailure(LOGIN_INITIATOR_ERROR, f"login key text longer than {MAX_KEY_TEXT} bytes")
        if req.cont:                      # more text follows in the next PDU: acknowledge with an empty reply
            return self._response(csg, 0, False, b"")
        pairs = parse_text(self.pending_text.take())
        security = [(k, v) for k, v in pairs if k in SECURITY_KEYS]
        if security and csg == OPERATIONAL:
            raise LoginFailure(LOGIN_INITIATOR_ERROR, "security key in operational stage")
        answers = self.negotiator.answer([(k, v) for k, v in pairs if k not in SECURITY_KEYS] if security
                                         else pairs)
        if not self.leading_checked:
            self.leading_checked = True
            answers = self._check_leading() + answers
        if security:
            answers += self._authenticate(security)
        if self.chap is not None and not self.chap.complete:
            transit = self._hold_security_stage(csg, transit)
        if transit and nsg == FULL_FEATURE:
            answers += self._our_declarations()
            self.negotiator.finish()
            if not self.tsih:
                self.tsih = self.allocate_tsih()
            self.done = True
        elif csg == OPERATIONAL:
            answers += self._our_declarations()
        return self._response(csg, nsg, transit, encode_text(answers))

    def _authenticate(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        answers: list[tuple[str, str]] = []
        chap_keys: dict[str, str] = {}
        for name, value in pairs:
            if name != "AuthMethod":
                chap_keys[name] = value
                continue
            if self.auth_method is not None:
                raise LoginFailure(LOGIN_INITIATOR_ERROR, "AuthMethod negotiated twice")
            chosen = self.negotiator.negotiate(AUTH_METHOD[self.chap is not None], value)
            if chosen is None or chosen == REJECT:     # (a list key always has an answer)
                wanted = "CHAP" if self.chap is not None else "None"
                raise LoginFailure(LOGIN_AUTH_FAILURE, f"AuthMethod={value}: this target accepts {wanted}")
            self.auth_method = chosen
            answers.append(("AuthMethod", chosen))
        if chap_keys:
            if self.auth_method != "CHAP" or self.chap is None:    # CHAP is offered only with a Chap
                raise LoginFailure(LOGIN_INITIATOR_ERROR, "CHAP keys without AuthMethod=CHAP")
            answers += self.chap.receive(chap_keys)
        return answers

    def _hold_security_stage(self, csg: int, transit: bool) -> bool:
        """CHAP is required and not finished: stay in the security stage, or fail if the initiator skips it."""
        if csg != SECURITY or (transit and self.auth_method is None):
            raise LoginFailure(LOGIN_AUTH_FAILURE, "authentication required (AuthMethod=CHAP)")
        return False

    def _start(self, req: P.LoginRequest) -> None:
        self.first = req
        self.isid = req.isid
        self.stat_sn = req.exp_stat_sn
        if req.version_min > 0:
            raise LoginFailure(LOGIN_UNSUPPORTED_VERSION, f"iSCSI version {req.version_min} not supported")
        if req.tsih:
            raise LoginFailure(LOGIN_SESSION_DOES_NOT_EXIST,
                               f"TSIH {req.tsih}: adding connections to a session is not supported")

    def _check_leading(self) -> list[tuple[str, str]]:
        """Checks on the first request's keys; returns the keys the first response must carry."""
        if not self.initiator_name:
            raise LoginFailure(LOGIN_MISSING_PARAMETER, "InitiatorName missing")
        session_type = self.session_type
        if session_type not in ("Normal", "Discovery"):
            raise LoginFailure(LOGIN_SESSION_TYPE_UNSUPPORTED, f"SessionType={session_type!r}")
        answers = [("TargetPortalGroupTag", str(self.portal_group_tag))]
        access = self.access.discovery
        if session_type == "Normal":
            name = self.target_name
            if not name:
                raise LoginFailure(LOGIN_MISSING_PARAMETER, "TargetName missing")
            target = self.access.targets.get(name)
            if target is None:
                raise LoginFailure(LOGIN_NOT_FOUND, f"no target {name!r}")
            access = target
            if not access.allows(self.initiator_name):
                raise LoginFailure(LOGIN_AUTHORIZATION_FAILURE,
                                   f"{self.initiator_name} is not in {name}'s allowed_initiators")
            if access.alias:
                answers.append(("TargetAlias", access.alias))
        refused = self.access.admit(self.initiator_name)
        if refused:
            raise LoginFailure(refused, f"connection limit reached for {self.initiator_name}")
        self._require(access)
        return answers

    def _require(self, access: TargetAccess) -> None:
        if access.chap is not None:
            self.chap = CHAP.Chap(access.chap, access.mutual_chap)

    def _our_declarations(self) -> list[tuple[str, str]]:
        if self.declared_ours:
            return []
        self.declared_ours = True
        return [("MaxRecvDataSegmentLength", str(self.params.target_max_recv_data_segment_length))]

    # -- output ---------------------------------------------------------------------------------------------
    def _response(self, csg: int, nsg: int, transit: bool, text: bytes, status: int = 0) -> bytes:
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        seq = self.stat_sn, self.cmd_sn, (self.cmd_sn + COMMAND_WINDOW - 1) & 0xFFFFFFFF
        self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF
        return R.login_response(seq, flags, self.isid, self.tsih, self.itt, status, text)

    def failure_response(self, failure: LoginFailure) -> bytes:
        self.tsih = 0
        return self._response(self.stage or 0, 0, False, b"", failure.status)
