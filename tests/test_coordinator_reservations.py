"""The coordinator's unit state authority (coordinator/unit_service.py), called the way the service calls its
handlers: the body rebuilt as its message class (coordinator/messages.py), the reply and pushes as they travel."""
import json
import struct
from types import SimpleNamespace

from coordinator import messages as M
from coordinator import unit_service
from coordinator.unit_state import reservations as R
from coordinator.unit_state.medium import IDLE, SANITIZE_FAILURE, SANITIZING
from target.scsi.sense import (ABORTED_COMMAND, BECOMING_READY, BUS_DEVICE_RESET, CAPACITY_DATA_HAS_CHANGED,
                               ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB, LOGICAL_UNIT_COMMUNICATION_FAILURE,
                               MEDIUM_REMOVAL_PREVENTED, MODE_PARAMETERS_CHANGED, NO_ADDITIONAL_SENSE, NOT_READY,
                               POWER_ON_RESET, SANITIZE_IN_PROGRESS, build_sense)
from target.scsi.task import GOOD, RESERVATION_CONFLICT

T = "iqn.2026-11.org.ringtgt:t"
A1 = f"iqn.a,i,0x000000000001,{T},t,0x0001"
A2 = f"iqn.a,i,0x000000000002,{T},t,0x0001"     # same initiator, new ISID (a reconnect after failover)
B = f"iqn.b,i,0x000000000003,{T},t,0x0001"


def prout_body(nexus, action, key=0, action_key=0, pr_type=0, flags=0, lun=0):
    return {"target": T, "lun": lun, "kind": "out", "nexus": nexus,
            "cdb": struct.pack(">BBB2xIB", 0x5F, action, pr_type, 24, 0),
            "parameters": struct.pack(">QQ4xB3x", key, action_key, flags)}


def _wire(pushes):
    """Pushes as they travel, each checked against its class as the worker's client does."""
    return [(push.KIND, type(push).from_body(push.to_body()).to_body()) for push in pushes]


def _handler(name, cls):
    def handle(self, body, origin):
        reply = getattr(super(UnitAuthority, self), name)(cls.from_body(body), origin)
        replied = cls.REPLY or type(reply.body)                 # a notification's answer goes nowhere
        return SimpleNamespace(body=replied.from_body(reply.body.to_body()).to_body(),
                               broadcasts=_wire(reply.broadcasts))
    return handle


class UnitAuthority(unit_service.UnitAuthority):
    """The authority with its handlers taking and giving bodies, through the message classes."""
    request = _handler("request", M.ReservationRequest)
    reset = _handler("reset", M.UnitReset)
    clear = _handler("clear", M.ClearTaskSet)
    attach = _handler("attach", M.AttachNexus)
    consumed = _handler("consumed", M.AttentionReported)
    mode_select = _handler("mode_select", M.ModeSelect)
    medium_request = _handler("medium_request", M.MediumRequest)
    nexus_lost = _handler("nexus_lost", M.NexusLost)
    views = _handler("states", M.FetchUnitStates)

    def views_of_every_unit(self):
        return _wire(super().views_of_every_unit())


def authority(state_dir=None):
    return UnitAuthority([(T, 0), (T, 1)], state_dir)


def test_request_answers_and_pushes_changes_only():
    auth = authority()
    reply = auth.request(prout_body(A1, R.REGISTER, 0, 5), "w0.1")
    assert reply.body["outcome"]["status"] == GOOD
    assert reply.broadcasts == [("pr.change", reply.body["change"])]
    assert reply.body["change"]["view"]["registrations"] and reply.body["change"]["lun"] == 0
    reply = auth.request({"target": T, "lun": 0, "kind": "in", "nexus": B, "cdb": bytes([0x5E, 0, 0, 0, 0, 0, 0,
                                                                                        0, 64, 0]),
                          "parameters": b""}, "w1.2")
    assert reply.broadcasts == [] and reply.body["change"] is None
    assert struct.unpack(">IIQ", reply.body["outcome"]["data"]) == (1, 8, 5)
    assert auth.request(prout_body(B, R.RESERVE, 7, pr_type=1), "w1.2").body["outcome"]["status"] == \
        RESERVATION_CONFLICT


def test_preempt_attentions_are_held_for_the_victim_until_consumed():
    auth = authority()
    auth.attach({"target": T, "nexus": B}, "w1.2")
    for nexus, key in ((A1, 1), (B, 2)):
        auth.request(prout_body(nexus, R.REGISTER, 0, key), "w0.1")
    reply = auth.request(prout_body(A1, R.PREEMPT_AND_ABORT, 1, 2, pr_type=1), "w0.1")
    assert reply.body["change"]["attentions"] == [[B, R.REGISTRATIONS_PREEMPTED]]
    assert reply.body["change"]["aborts"] == [B]
    assert auth.units[(T, 0)].pending[B] == [POWER_ON_RESET, R.REGISTRATIONS_PREEMPTED]
    auth.consumed({"target": T, "lun": 0, "nexus": B, "asc": POWER_ON_RESET}, "w1.2")
    assert auth.units[(T, 0)].pending[B] == [R.REGISTRATIONS_PREEMPTED]


def test_power_on_only_for_an_initiator_the_target_has_not_seen():
    auth = authority()
    first = auth.attach({"target": T, "nexus": A1}, "w0.1").body
    assert first["attentions"] == [[0, [POWER_ON_RESET]], [1, [POWER_ON_RESET]]]
    assert [lun for lun, _ in first["views"]] == [0, 1]
    again = auth.attach({"target": T, "nexus": A2}, "w1.2").body     # new ISID after a failover
    assert again["attentions"] == [[0, []], [1, []]]


def test_reset_releases_spc2_and_tells_every_known_nexus():
    auth = authority()
    for nexus in (A1, B):
        auth.attach({"target": T, "nexus": nexus}, "w0.1")
    auth.request({"target": T, "lun": 1, "kind": "reserve", "nexus": A1, "cdb": b"", "parameters": b""}, "w0.1")
    assert auth.units[(T, 1)].reservations.spc2_holder == A1
    body = {"target": T, "luns": [1], "nexus": B, "asc": BUS_DEVICE_RESET, "cold": False}
    reply = auth.reset(body, "w1.2")
    assert reply.broadcasts == [("unit.reset", reply.body)] and reply.body["views"][0][1]["spc2_holder"] is None
    assert auth.units[(T, 1)].pending == {A1: [POWER_ON_RESET, BUS_DEVICE_RESET],
                                          B: [POWER_ON_RESET, BUS_DEVICE_RESET]}
    assert auth.units[(T, 0)].pending[A1] == [POWER_ON_RESET]


def test_nexus_loss_and_worker_death_release_spc2():
    auth = authority()
    auth.attach({"target": T, "nexus": A1}, "w0.1")
    auth.request({"target": T, "lun": 0, "kind": "reserve", "nexus": A1, "cdb": b"", "parameters": b""}, "w0.1")
    reply = auth.nexus_lost({"target": T, "nexus": A1}, "w0.1")
    assert reply.body["changes"][0]["view"]["spc2_holder"] is None
    assert reply.broadcasts == [("pr.change", reply.body["changes"][0])]
    auth.attach({"target": T, "nexus": B}, "w1.2")
    auth.request({"target": T, "lun": 0, "kind": "reserve", "nexus": B, "cdb": b"", "parameters": b""}, "w1.2")
    auth.worker_gone("w1.2")
    assert auth.units[(T, 0)].reservations.spc2_holder is None
    (kind, change), = auth.views({}, "w1.3").broadcasts                        # the restarted worker asks
    assert kind == "pr.change" and change["lun"] == 0 and change["view"]["spc2_holder"] is None
    assert auth.views({}, "w0.1").broadcasts == []


def test_aptpl_state_survives_a_new_coordinator(tmp_path):
    auth = authority(str(tmp_path))
    auth.request(prout_body(A1, R.REGISTER, 0, 9, flags=R.APTPL), "w0.1")
    auth.request(prout_body(A1, R.RESERVE, 9, pr_type=R.EXCLUSIVE_ACCESS), "w0.1")
    assert (tmp_path / "reservations" / f"{T}-0.json").exists()
    restarted = authority(str(tmp_path))
    state = restarted.units[(T, 0)].reservations
    assert state.keys == {A1: 9} and state.holder == A1 and state.pr_type == R.EXCLUSIVE_ACCESS
    restarted.request(prout_body(A1, R.REGISTER, 9, 0), "w0.1")                 # unregistered: file goes
    assert not (tmp_path / "reservations" / f"{T}-0.json").exists()
    assert authority(str(tmp_path)).units[(T, 0)].reservations.keys == {}


def test_mode_select_tells_every_other_nexus_and_every_worker():
    auth = authority()
    for nexus, origin in ((A1, "w0.1"), (B, "w1.2")):
        auth.attach({"target": T, "nexus": nexus}, origin)
    reply = auth.mode_select({"target": T, "lun": 1, "nexus": A1, "wce": False, "swp": True}, "w0.1")
    change = {"target": T, "lun": 1, "wce": False, "swp": True, "attentions": [[B, MODE_PARAMETERS_CHANGED]]}
    assert reply.body == change and reply.broadcasts == [("mode.change", change)]
    assert auth.views({}, "w2.3").body["modes"] == [[T, 1, False, True]]
    assert auth.attach({"target": T, "nexus": B}, "w1.2").body["attentions"][1] == \
        [1, [POWER_ON_RESET, MODE_PARAMETERS_CHANGED]]
    copy = authority()
    copy.restore(auth.snapshot())
    assert copy.views({}, "w2.3").body["modes"] == [[T, 1, False, True]]


def medium(nexus, action, lun=1):
    return {"target": T, "lun": lun, "nexus": nexus, "action": action}


def test_medium_prevented_by_any_nexus_loads_and_ejects_on_every_worker():
    auth = authority()
    for nexus, origin in ((A1, "w0.1"), (B, "w1.2")):
        auth.attach({"target": T, "nexus": nexus}, origin)
    assert auth.medium_request(medium(A1, "prevent"), "w0.1").broadcasts == []
    reply = auth.medium_request(medium(B, "eject"), "w1.2")
    assert reply.body == {"target": T, "lun": 1, "loaded": True, "sanitize": IDLE,
                          "refused": [ILLEGAL_REQUEST, MEDIUM_REMOVAL_PREVENTED]}
    assert reply.broadcasts == []
    auth.nexus_lost({"target": T, "nexus": A1}, "w0.1")                       # its prevention goes with it
    reply = auth.medium_request(medium(B, "eject"), "w1.2")
    assert reply.body["refused"] is None
    assert reply.broadcasts == [("medium.change", {"target": T, "lun": 1, "loaded": False, "sanitize": IDLE})]
    assert auth.views({}, "w2.3").body["media"] == [[T, 0, True, IDLE], [T, 1, False, IDLE]]
    copy = authority()
    copy.restore(auth.snapshot())
    assert copy.views({}, "w2.3").body["media"] == [[T, 0, True, IDLE], [T, 1, False, IDLE]]
    auth.medium_request(medium(B, "prevent"), "w1.2")
    auth.worker_gone("w1.2")                                                   # a dead worker's nexuses too
    assert auth.medium_request(medium(A2, "load"), "w0.1").body["refused"] is None
    auth.medium_request(medium(A2, "prevent"), "w0.1")
    auth.reset({"target": T, "luns": [0, 1], "nexus": A2, "asc": BUS_DEVICE_RESET, "cold": False}, "w0.1")
    assert auth.medium_request(medium(A2, "eject"), "w0.1").body["refused"] is None


def test_sanitize_runs_once_fails_with_its_worker_and_exits_failure_mode_only_with_ause():
    auth = authority()
    reply = auth.medium_request(medium(A1, "sanitize", lun=0), "w0.1")
    assert reply.body["refused"] is None and reply.body["sanitize"] == SANITIZING
    assert reply.broadcasts == [("medium.change", {"target": T, "lun": 0, "loaded": True, "sanitize": SANITIZING})]
    assert auth.medium_request(medium(B, "sanitize", lun=0), "w1.2").body["refused"] == [NOT_READY,
                                                                                         SANITIZE_IN_PROGRESS]
    auth.worker_gone("w1.2")                                                   # not the one running it
    assert auth.units[(T, 0)].medium.sanitize == SANITIZING
    auth.worker_gone("w0.1")
    assert auth.views({}, "w0.3").broadcasts == [("medium.change", {"target": T, "lun": 0, "loaded": True,
                                                                    "sanitize": SANITIZE_FAILURE})]
    assert auth.medium_request(medium(B, "exit-failure-mode", lun=0), "w0.3").body["refused"] == [
        ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB]                                 # the failed one had no AUSE
    auth.medium_request(medium(B, "sanitize-ause", lun=0), "w0.3")
    auth.medium_request(medium("", "sanitize-failed", lun=0), "w0.3")
    reply = auth.medium_request(medium(B, "exit-failure-mode", lun=0), "w0.3")
    assert reply.body["refused"] is None and reply.body["sanitize"] == IDLE
    auth.medium_request(medium(B, "sanitize", lun=0), "w0.3")
    assert auth.medium_request(medium("", "sanitized", lun=0), "w0.3").body["sanitize"] == IDLE


def test_a_sanitize_unfinished_when_the_target_stopped_is_failed_at_the_next_start(tmp_path):
    auth = authority(str(tmp_path))
    auth.medium_request(medium(A1, "sanitize-ause", lun=0), "w0.1")
    saved = tmp_path / "reservations" / f"{T}-0.sanitize.json"
    assert saved.exists()
    restarted = authority(str(tmp_path))                                        # a new `serve`
    assert restarted.units[(T, 0)].medium.sanitize == SANITIZE_FAILURE
    assert restarted.views({}, "w0.2").body["media"][0] == [T, 0, True, SANITIZE_FAILURE]
    assert restarted.medium_request(medium(A1, "exit-failure-mode", lun=0), "w0.2").body["refused"] is None
    assert not saved.exists() and authority(str(tmp_path)).units[(T, 0)].medium.sanitize == IDLE


def test_a_takeover_fails_the_sanitize_of_the_node_taken_over():
    peer, auth = authority(), authority()
    peer.medium_request(medium(A1, "sanitize", lun=0), "w0.77")                 # on the peer's worker
    assert auth.adopt(peer.snapshot()) and auth.units[(T, 0)].medium.sanitize == SANITIZING
    assert not auth.interrupt_sanitizes({"w0.77"})                             # still running there
    assert auth.interrupt_sanitizes({"w0.1", "w1.2"})                          # the peer is gone
    assert auth.units[(T, 0)].medium.sanitize == SANITIZE_FAILURE
    assert ("medium.change", {"target": T, "lun": 0, "loaded": True, "sanitize": SANITIZE_FAILURE}) in \
        auth.views_of_every_unit()


def test_snapshot_restore():
    auth = authority()
    auth.attach({"target": T, "nexus": A1}, "w0.1")
    auth.request(prout_body(A1, R.REGISTER, 0, 3), "w0.1")
    copy = authority()
    copy.restore(auth.snapshot())
    assert copy.snapshot() == auth.snapshot()
    assert copy.attach({"target": T, "nexus": A2}, "w0.1").body["attentions"][0] == [0, []]



def greeted(auth: UnitAuthority) -> dict[str, set[str]]:
    """The initiators told of the power-on, by target (each unit keeps its own)."""
    names: dict[str, set[str]] = {}
    for (target, _), unit in auth.units.items():
        if unit.greeted:
            names.setdefault(target, set()).update(unit.greeted)
    return names

def test_a_restarted_coordinator_resumes_a_new_serve_does_not(tmp_path):
    auth = UnitAuthority([(T, 0)], str(tmp_path), incarnation="100")
    auth.attach({"target": T, "nexus": A1}, "w0.1")
    auth.request(prout_body(A1, R.REGISTER, 0, 4), "w0.1")                      # no APTPL
    resumed = UnitAuthority([(T, 0)], str(tmp_path), incarnation="100")    # same supervisor
    assert resumed.units[(T, 0)].reservations.keys == {A1: 4} and greeted(resumed) == {T: {"iqn.a"}}
    fresh = UnitAuthority([(T, 0)], str(tmp_path), incarnation="200")      # a new `serve`
    assert fresh.units[(T, 0)].reservations.keys == {} and greeted(fresh) == {}
    assert [p.name for p in (tmp_path / "reservations").iterdir()] == []


def test_versions_hooks_and_adopting_a_newer_peer_state(tmp_path):
    changes = []
    active = authority()
    active.on_change(lambda: changes.append(active.version))
    active.attach({"target": T, "nexus": A1}, "w0.1")
    active.request(prout_body(A1, R.REGISTER, 0, 5), "w0.1")
    active.request(prout_body(A1, R.RESERVE, 5, pr_type=R.WRITE_EXCLUSIVE), "w0.1")
    assert changes == [1, 2, 3]
    standby = authority()
    assert standby.adopt(active.snapshot()) and standby.version == 3
    assert standby.units[(T, 0)].reservations.holder == A1
    assert not standby.adopt(active.snapshot())                              # not newer: nothing happens
    assert not active.adopt(authority().snapshot())                          # an empty peer's is older
    pushes = standby.views_of_every_unit()
    assert ("medium.change", {"target": T, "lun": 1, "loaded": True, "sanitize": IDLE}) in pushes
    view = next(body["view"] for kind, body in pushes if kind == "pr.change" and body["lun"] == 0)
    assert view["holder"] == A1
    assert standby.attach({"target": T, "nexus": A2}, "w0.1").body["attentions"][0] == [0, []]  # no POWER ON


def test_saved_reservations_count_as_a_version(tmp_path):
    first = authority(str(tmp_path))
    first.request(prout_body(A1, R.REGISTER, 0, 9, flags=R.APTPL), "w0.1")
    restarted = authority(str(tmp_path))
    assert restarted.version == 1 and not restarted.adopt(authority().snapshot())


def test_lost_nexuses_leave_no_empty_queues_behind():
    auth = authority()
    for i in range(100):
        nexus = f"iqn.a,i,0x{i:012x},{T},t,0x0001"
        auth.attach({"target": T, "nexus": nexus}, "w0.1")
        auth.consumed({"target": T, "lun": 0, "nexus": nexus, "asc": POWER_ON_RESET}, "w0.1")
        auth.consumed({"target": T, "lun": 1, "nexus": nexus, "asc": POWER_ON_RESET}, "w0.1")
        auth.nexus_lost({"target": T, "nexus": nexus}, "w0.1")
    assert auth.units[(T, 0)].pending == {} and auth.units[(T, 1)].pending == {}
    auth.attach({"target": T, "nexus": B}, "w1.2")
    auth.reset({"target": T, "luns": [0], "nexus": A1, "asc": BUS_DEVICE_RESET, "cold": False}, "w0.1")
    auth.nexus_lost({"target": T, "nexus": B}, "w1.2")
    assert auth.units[(T, 0)].pending == {B: [POWER_ON_RESET, BUS_DEVICE_RESET]}    # kept: it has news


def serve(tmp_path, incarnation, units=((T, 0), (T, 1))):
    """The authority of a coordinator started by `serve` (supervisor pid = incarnation) on state_dir tmp_path."""
    return UnitAuthority(list(units), str(tmp_path), incarnation=str(incarnation))


def test_a_clean_stop_keeps_the_units_state_for_the_next_serve_only(tmp_path):
    auth = serve(tmp_path, 100)
    for nexus, origin in ((A1, "w0.1"), (B, "w1.2")):
        auth.attach({"target": T, "nexus": nexus}, origin)
        auth.consumed({"target": T, "lun": 1, "nexus": nexus, "asc": POWER_ON_RESET}, origin)
    auth.request(prout_body(A1, R.REGISTER, 0, 7, lun=1), "w0.1")              # no APTPL
    auth.request(prout_body(A1, R.RESERVE, 7, pr_type=R.WRITE_EXCLUSIVE, lun=1), "w0.1")
    auth.request({"target": T, "lun": 0, "kind": "reserve", "nexus": B, "cdb": b"", "parameters": b""}, "w1.2")
    auth.mode_select({"target": T, "lun": 1, "nexus": A1, "wce": False, "swp": False}, "w0.1")
    auth.medium_request(medium(A1, "prevent"), "w0.1")
    auth.save_at_stop()                                                        # SIGTERM
    stopped = tmp_path / "reservations" / "stopped.json"
    assert stopped.exists()

    resumed = serve(tmp_path, 200)                                             # `serve` again
    assert not stopped.exists() and (tmp_path / "reservations" / "live-200.json").exists()
    unit = resumed.units[(T, 1)]
    assert unit.reservations.keys == {A1: 7} and unit.reservations.holder == A1
    assert unit.mode == [False, False] and resumed.views({}, "w0.3").body["modes"] == [[T, 1, False, False]]
    assert unit.pending == {B: [MODE_PARAMETERS_CHANGED]}                      # still owed to B; A1's empty queue gone
    assert unit.medium.preventing == set()                                     # the stop lost every nexus
    assert resumed.units[(T, 0)].reservations.spc2_holder is None
    assert resumed.attach({"target": T, "nexus": A2}, "w0.3").body["attentions"] == [[0, []], [1, []]]   # no POWER ON
    assert resumed.attach({"target": T, "nexus": B}, "w1.4").body["attentions"][1] == [1, [MODE_PARAMETERS_CHANGED]]

    crashed = serve(tmp_path, 300)                                             # SIGKILL / power loss, then `serve`
    assert crashed.units[(T, 1)].reservations.keys == {} and greeted(crashed) == {}
    assert crashed.units[(T, 1)].mode is None and crashed.units[(T, 1)].pending == {}


def test_the_live_state_of_the_same_serve_wins_over_a_stop_snapshot(tmp_path):
    first = serve(tmp_path, 100)
    first.request(prout_body(A1, R.REGISTER, 0, 1), "w0.1")
    first.save_at_stop()
    coordinator = serve(tmp_path, 200)                                         # the next `serve` …
    coordinator.request(prout_body(A1, R.REGISTER, 1, 2), "w0.1")
    coordinator.save_at_stop()                                                 # … whose coordinator alone got SIGTERM
    restarted = serve(tmp_path, 200)                                           # and was restarted by its supervisor
    assert restarted.units[(T, 0)].reservations.keys == {A1: 2}
    assert not (tmp_path / "reservations" / "stopped.json").exists()
    assert serve(tmp_path, 300).units[(T, 0)].reservations.keys == {}          # a crash of that `serve` later


def test_a_sanitize_cut_short_by_the_stop_has_failed(tmp_path):
    auth = serve(tmp_path, 100)
    auth.medium_request(medium(A1, "sanitize-ause", lun=0), "w0.1")
    auth.save_at_stop()                                                        # its worker still running (SIGKILL)
    resumed = serve(tmp_path, 200)
    assert resumed.units[(T, 0)].medium.sanitize == SANITIZE_FAILURE
    assert resumed.medium_request(medium(A1, "exit-failure-mode", lun=0), "w0.2").body["refused"] is None
    assert not (tmp_path / "reservations" / f"{T}-0.sanitize.json").exists()


def test_a_target_whose_luns_changed_greets_its_initiators_again(tmp_path):
    other = "iqn.2026-11.org.ringtgt:other"
    auth = serve(tmp_path, 100, units=((T, 0), (T, 1), (other, 0), (other, 1)))
    for target in (T, other):
        auth.attach({"target": target, "nexus": A1.replace(T, target)}, "w0.1")
    auth.request(prout_body(A1, R.REGISTER, 0, 3), "w0.1")
    auth.save_at_stop()
    resumed = serve(tmp_path, 200, units=((T, 0), (T, 1), (other, 0)))       # other's LUN 1 was removed
    assert set(resumed.units) == {(T, 0), (T, 1), (other, 0)}
    assert resumed.units[(T, 0)].reservations.keys == {A1: 3}
    assert greeted(resumed) == {T: {"iqn.a"}}


def test_a_malformed_stop_snapshot_is_a_power_on(tmp_path, caplog):
    auth = serve(tmp_path, 100)
    auth.request(prout_body(B, R.REGISTER, 0, 8), "w1.2")
    auth.request(prout_body(A1, R.REGISTER, 0, 9, flags=R.APTPL), "w0.1")       # the last APTPL: the unit's file
    auth.save_at_stop()
    stopped = tmp_path / "reservations" / "stopped.json"
    for text in ('{"units": [["x"]], "greeted": {}}', "{not json",
                 f'{{"units": [["{T}", 0, {{"generation": 5}}, {{}}, null, null]], "greeted": {{}}}}'):  # half applied
        stopped.write_text(text)
        started = serve(tmp_path, 200)
        assert started.units[(T, 0)].reservations.keys == {A1: 9, B: 8} and greeted(started) == {}
        assert started.units[(T, 0)].reservations.generation == auth.units[(T, 0)].reservations.generation
        assert not stopped.exists() and "malformed" in caplog.text


class _SlowStore:
    """A store that answers later, as the RADOS one does (coordinator/rados_store.py): the test completes saves."""
    deferred = True
    save_deadline = 3.0
    where = "a slow store"

    def __init__(self):
        self.aptpl = None
        self.saves = []

    def save(self, key, value, done=None, based_on=None):
        self.saves.append((key, value, done))


class _Deferred:
    """The promise `service.defer()` gives, with `time_left` set by the test."""

    def __init__(self, time_left):
        self.left, self.outcome = time_left, None

    def time_left(self):
        return self.left

    def drop(self, why, detail):
        self.outcome = ("dropped", why)

    def resolve(self, reply):
        self.outcome = ("answered", reply.body.outcome["status"])


def test_a_request_that_waited_behind_a_save_past_its_deadline_is_dropped_not_applied():
    auth = unit_service.UnitAuthority([(T, 0)])
    unit = auth.unit(T, 0)
    unit.store = store = _SlowStore()
    promises = [_Deferred(10.0), _Deferred(1.0), _Deferred(10.0)]
    handed = iter(promises)
    auth._defer = lambda: next(handed)
    first = M.ReservationRequest.from_body(prout_body(A1, R.REGISTER, 0, 9, flags=R.APTPL))
    late = M.ReservationRequest.from_body(prout_body(B, R.REGISTER, 0, 5, flags=R.APTPL))
    keys = M.ReservationRequest.from_body({**prout_body(B, R.READ_KEYS), "kind": "in",
                                           "cdb": struct.pack(">BB5xHx", 0x5E, R.READ_KEYS, 64), "parameters": b""})
    for request in (first, late, keys):
        auth.request(request, "w0.1")
    (key, value, done), = store.saves                   # the first waits for its save, the others behind it
    promises[1].left = 0.5                              # less than a save may take: its worker will not wait
    done(None)
    assert [p.outcome for p in promises] == [("answered", GOOD), ("dropped", "expired"), ("answered", GOOD)]
    assert len(store.saves) == 1                        # the late REGISTER was neither saved nor applied
    assert unit.reservations.view()["registered"] == [A1]


def test_a_request_whose_store_is_behind_a_takeovers_osd_map_is_not_ready_becoming_ready_and_not_applied():
    """StoreBehind (coordinator/store_osdmap.py): the save was held, the command answers as the workers do on the RBD
    LUNs of a cluster they are behind on (an initiator retries it); the cluster not answering stays 02/08/00."""
    auth = unit_service.UnitAuthority([(T, 0)])
    unit = auth.unit(T, 0)
    unit.store = store = _SlowStore()
    replies = []
    auth._defer = lambda: SimpleNamespace(time_left=lambda: 10.0, resolve=replies.append)
    register = M.ReservationRequest.from_body(prout_body(A1, R.REGISTER, 0, 9))
    for result in (unit_service.StoreBehind("not at the takeover's OSD map (epoch 7) yet"),
                   unit_service.StoreFailed("no answer from the Ceph cluster within 3 s")):
        auth.request(register, "w0.1")
        store.saves.pop()[2](result)
    assert [reply.body.outcome["sense"] for reply in replies] == [
        build_sense(NOT_READY, BECOMING_READY), build_sense(NOT_READY, LOGICAL_UNIT_COMMUNICATION_FAILURE)]
    assert unit.reservations.keys == {} and all(reply.body.change is None for reply in replies)


# -- the unit record an RBD LUN keeps in RADOS (UnitState.record / take_record) ---------------------------------
def _busy_unit(auth):
    """LUN 0 with registrations and a reservation (no APTPL), a preempted registrant's unit attention, WCE off and a
    medium prevention, A1 and B told of the power-on."""
    for nexus, origin in ((A1, "w0.1"), (B, "w1.2")):
        auth.attach({"target": T, "nexus": nexus}, origin)
    auth.request(prout_body(A1, R.REGISTER, 0, 1), "w0.1")
    auth.request(prout_body(B, R.REGISTER, 0, 2), "w1.2")
    auth.request(prout_body(A1, R.RESERVE, 1, pr_type=R.WRITE_EXCLUSIVE), "w0.1")
    auth.request(prout_body(A1, R.PREEMPT, 1, 2, pr_type=R.WRITE_EXCLUSIVE), "w0.1")
    auth.mode_select({"target": T, "lun": 0, "nexus": A1, "wce": False, "swp": False}, "w0.1")
    auth.medium_request(medium(A1, "prevent", lun=0), "w0.1")
    return auth.units[(T, 0)]


def test_a_unit_record_carries_the_whole_unit_through_json():
    unit = _busy_unit(authority())
    record = json.loads(json.dumps(unit.record()))
    taken = unit_service.UnitState()
    taken.take_record(record)
    assert taken.record() == unit.record() == record
    assert taken.reservations.keys == {A1: 1} and taken.reservations.holder == A1 and not taken.reservations.aptpl
    assert taken.pending[B] == [POWER_ON_RESET, R.REGISTRATIONS_PREEMPTED, MODE_PARAMETERS_CHANGED]
    assert taken.mode == [False, False] and taken.medium.preventing == {A1} and taken.greeted == {"iqn.a", "iqn.b"}


def test_a_record_can_carry_a_request_not_applied_yet():
    """What a reservation request's save writes before the request is applied: its reservations and attentions."""
    auth = authority()
    unit = _busy_unit(auth)
    auth.attach({"target": T, "nexus": A2}, "w0.3")
    auth.request(prout_body(A2, R.REGISTER, 0, 3), "w0.3")
    before = unit.record()
    trial = R.Reservations()
    trial.restore(unit.reservations.snapshot())
    clear = prout_body(A1, R.CLEAR, 1)
    outcome = R.run_request(trial, "out", A1, clear["cdb"], clear["parameters"])
    record = unit.record(trial, outcome.attentions)
    assert outcome.attentions == [(A2, R.RESERVATIONS_PREEMPTED)]
    assert record["reservations"]["keys"] == {} and record["pending"][A2] == [R.RESERVATIONS_PREEMPTED]
    assert unit.record() == before and unit.pending[A2] == []    # the unit itself is untouched


def test_taking_a_record_keeps_what_is_pending_and_greeted_here():
    stored = _busy_unit(authority()).record()
    here = authority().units[(T, 0)]
    here.greeted, here.pending = {"iqn.c"}, {B: [CAPACITY_DATA_HAS_CHANGED]}
    here.mode = [True, True]
    here.take_record(stored)
    assert here.greeted == {"iqn.a", "iqn.b", "iqn.c"}
    assert here.pending[B] == [CAPACITY_DATA_HAS_CHANGED, POWER_ON_RESET, R.REGISTRATIONS_PREEMPTED,
                               MODE_PARAMETERS_CHANGED]
    assert here.mode == [False, False] and here.reservations.keys == {A1: 1}
    here.take_record(None)                                          # an object removed: an empty unit
    assert here.reservations.keys == {} and here.mode is None


def test_a_unit_taken_at_start_has_lost_every_nexus():
    unit = _busy_unit(authority())
    unit.reservations.spc2_holder = B
    unit.pending[A2] = []
    unit.lose_every_nexus()
    assert unit.reservations.spc2_holder is None and unit.medium.preventing == set()
    assert A2 not in unit.pending and unit.pending[B]                  # an attention still owed stays
    assert unit.reservations.keys == {A1: 1}                            # registrations are not the nexus's


def test_an_initiator_is_told_of_each_units_power_on_once():
    auth = authority()
    auth.units[(T, 1)].greeted.add("iqn.a")                            # told of LUN 1's power-on (another node)
    assert auth.attach({"target": T, "nexus": A1}, "w0.1").body["attentions"] == [[0, [POWER_ON_RESET]], [1, []]]
    assert auth.attach({"target": T, "nexus": A2}, "w0.2").body["attentions"] == [[0, []], [1, []]]


def test_a_snapshot_of_an_older_ringtgt_greets_by_target():
    auth = authority()
    snapshot = auth.snapshot()
    snapshot["units"] = [unit[:6] for unit in snapshot["units"]]
    snapshot["greeted"] = {T: ["iqn.a"]}
    auth.restore(snapshot)
    assert auth.units[(T, 0)].greeted == auth.units[(T, 1)].greeted == {"iqn.a"}


def test_a_snapshot_of_a_newer_ringtgt_restores_ignoring_the_fields_it_adds():
    auth = authority()
    auth.attach({"target": T, "nexus": A1}, "w0.1")
    snapshot = auth.snapshot()
    snapshot["units"] = [[*unit, {"later": 1}] for unit in snapshot["units"]]
    snapshot["later"] = []
    restored = authority()
    restored.restore(snapshot)
    assert restored.snapshot()["units"] == auth.snapshot()["units"]


# -- writes behind and attaches with a deferred store (the RADOS one's behaviour, answered by the test) ------------
class _ThreadedStore(_SlowStore):
    """A deferred store whose thread may still hold a job answered at its deadline (`busy`), and whose refreshes
    the test answers."""

    def __init__(self):
        super().__init__()
        self.record = None
        self.sanitize = None
        self.busy = False
        self.refreshes = []

    def refresh(self, done):
        self.refreshes.append(done)

    def forget(self):
        self.record = None


def _with_threaded_store():
    auth = unit_service.UnitAuthority([(T, 0)])
    unit = auth.unit(T, 0)
    unit.store = store = _ThreadedStore()
    timers = []
    auth._service = SimpleNamespace(call_later=lambda seconds, fn: timers.append(fn), submit=lambda message: None)
    return auth, unit, store, timers


def _sanitize_started(auth, store, action="sanitize", origin="w0.1"):
    """A sanitize's start on LUN 0's deferred store: its record saved (the save answered here, taken by the store as
    the RADOS one takes it), then it is applied and answered: that answer."""
    answers = []
    auth._defer = lambda: SimpleNamespace(time_left=lambda: 10.0, resolve=answers.append)
    auth.medium_request(M.MediumRequest.from_body(medium(A1, action, lun=0)), origin)
    key, record, saved = store.saves[-1]
    assert key == unit_service.SANITIZE and not answers
    store.sanitize = record
    saved(None)
    (answer,) = answers
    return answer


def test_a_write_behind_waits_for_its_stores_earlier_job_and_retries_once_per_interval():
    auth, unit, store, timers = _with_threaded_store()
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    (_, first, done), = store.saves                 # written behind, not waited for
    store.busy = True                               # answered at its deadline: the thread still has it
    done(unit_service.StoreFailed("no answer from the Ceph cluster within 3 s"))
    auth.mode_select(M.ModeSelect(T, 0, A1, True, False), "w0.1")
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    assert len(store.saves) == 1 and len(timers) == 1, (store.saves, timers)   # no pile-up, one retry due
    store.busy = False                              # the thread is done with it
    timers.pop()()
    assert len(store.saves) == 2 and store.saves[1][1] == unit.record()


def test_an_attach_whose_nexus_went_while_the_units_were_read_attaches_nothing():
    auth, unit, store, _ = _with_threaded_store()
    promise = _Deferred(float("inf"))
    answers = []
    promise.resolve = answers.append
    auth._defer = lambda: promise
    auth.attach(M.AttachNexus(T, A1), "w0.1")
    (refreshed,) = store.refreshes                  # the unit's object is read first
    auth.nexus_lost(M.NexusLost(T, A1), "w0.1")     # its connection closed meanwhile
    refreshed(None)
    (reply,) = answers
    assert reply.body.to_body() == M.NexusAttentions([], []).to_body()
    assert A1 not in unit.pending and "iqn.a" not in unit.greeted and not auth.attached.get("w0.1")


def test_a_sanitize_record_another_coordinator_wrote_fails_the_unit_here_and_is_pushed():
    """Found at a login's read of the object (without a new unit record: only the sanitize record is news) or in a
    save's refusal (Stale): the unit enters sanitize failure mode, and StoredStateTaken pushes its medium to every
    worker. A sanitize running here goes on; a record gone from the object ends the failure mode it put the unit in
    (the other direction, and its races: the test below)."""
    auth, unit, store, _ = _with_threaded_store()
    submitted = []
    auth._service.submit = submitted.append
    promise = _Deferred(float("inf"))
    promise.resolve = lambda reply: None
    auth._defer = lambda: promise
    auth.attach(M.AttachNexus(T, A1), "w0.1")
    store.refreshes.pop()({unit_service.SANITIZE: {"ause": True}})
    assert unit.medium.sanitize == SANITIZE_FAILURE and unit.medium.ause
    assert submitted == [M.StoredStateTaken(T, 0)]
    assert ("medium.change", {"target": T, "lun": 0, "loaded": True, "sanitize": SANITIZE_FAILURE}) in \
        _wire(auth.stored_taken(M.StoredStateTaken(T, 0), "w0.1").broadcasts)
    auth.attach(M.AttachNexus(T, A1), "w0.1")
    store.refreshes.pop()({unit_service.SANITIZE: None})                    # cleared there: ended here too
    assert unit.medium.sanitize == IDLE and not unit.medium.ause

    auth, unit, store, _ = _with_threaded_store()
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    (_, _, done), = store.saves
    done(unit_service.Stale(None, {"ause": False}))                         # a write behind refused
    assert unit.medium.sanitize == SANITIZE_FAILURE and not unit.medium.ause

    auth, unit, store, _ = _with_threaded_store()
    _sanitize_started(auth, store)                                          # running here
    (key, record, _), (_, _, done) = store.saves                            # its record, then the write behind
    assert key == unit_service.SANITIZE and record == {"ause": False}
    done(unit_service.Stale(None, record))
    assert unit.medium.sanitize == SANITIZING


def test_a_sanitize_record_gone_from_the_store_ends_the_failure_mode_only_where_the_store_had_it():
    """take_sanitize(None), from another coordinator's newer write: a failure mode whose record the store is known to
    have held (our own, once saved; one taken from it) ends, and is pushed; one whose record is not saved yet (the
    save still queued, or failed) stays, and so does a sanitize running here."""
    def refreshed(auth, store, news):
        promise = _Deferred(float("inf"))
        promise.resolve = lambda reply: None
        auth._defer = lambda: promise
        auth.attach(M.AttachNexus(T, A1), "w0.1")
        store.refreshes.pop()(news)

    auth, unit, store, _ = _with_threaded_store()
    submitted = []
    auth._service.submit = submitted.append
    _sanitize_started(auth, store)
    auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize-failed", lun=0)), "w0.1")
    saves = [(key, record, done) for key, record, done in store.saves if key == unit_service.SANITIZE]
    assert [record for _, record, _ in saves] == [{"ause": False}, {"ause": False}]
    refreshed(auth, store, {unit_service.SANITIZE: None})       # our record not written yet: the mode stays
    assert unit.medium.sanitize == SANITIZE_FAILURE
    saves[-1][2](unit_service.StoreFailed("no answer from the Ceph cluster within 3 s"))
    refreshed(auth, store, {unit_service.SANITIZE: None})       # nor written at all
    assert unit.medium.sanitize == SANITIZE_FAILURE
    saves[-1][2](None)                                          # (its answer, had it been saved)
    refreshed(auth, store, {unit_service.SANITIZE: None})       # saved, then removed by another node
    assert unit.medium.sanitize == IDLE and submitted[-1] == M.StoredStateTaken(T, 0)
    assert ("medium.change", {"target": T, "lun": 0, "loaded": True, "sanitize": IDLE}) in \
        _wire(auth.stored_taken(M.StoredStateTaken(T, 0), "w0.1").broadcasts)

    auth, unit, store, _ = _with_threaded_store()
    _sanitize_started(auth, store)
    refreshed(auth, store, {unit_service.SANITIZE: {"ause": False}})     # its own record, or a stale one
    refreshed(auth, store, {unit_service.SANITIZE: None})
    assert unit.medium.sanitize == SANITIZING                   # running here: ends or fails here

    auth, unit, store, _ = _with_threaded_store()
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    (_, _, done), = store.saves
    done(unit_service.Stale(None, {"ause": True}))              # taken from the store at a refused save
    assert unit.medium.sanitize == SANITIZE_FAILURE
    auth.mode_select(M.ModeSelect(T, 0, A1, True, False), "w0.1")
    store.saves[-1][2](unit_service.Stale(None, None))          # and ended by a newer write without it
    assert unit.medium.sanitize == IDLE


def test_a_sanitize_record_not_saved_is_written_again_behind():
    """Its save held behind a takeover's OSD map (or failed): the store does not hold it, so it is written behind,
    after the unit's record, once at a time; once the store holds it, nothing more."""
    auth, unit, store, _ = _with_threaded_store()
    unit.medium.request(A1, "sanitize", "w0.77")            # a peer's, adopted over the cluster bus
    assert auth.interrupt_sanitizes({"w0.1"})               # the peer taken over: its record saved here
    (key, record, held), (behind_key, _, written) = store.saves
    assert (key, record, behind_key) == (unit_service.SANITIZE, {"ause": False}, unit_service.UNIT)
    held(unit_service.StoreBehind("not at the takeover's OSD map (epoch 7) yet: waiting for it"))
    store.record = unit.record()
    written(None)                                   # the record written behind: then the sanitize record again
    assert store.saves[-1][:2] == (unit_service.SANITIZE, {"ause": False}) and len(store.saves) == 3
    store.sanitize = {"ause": False}
    store.saves[-1][2](None)
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    assert [save[0] for save in store.saves[3:]] == [unit_service.UNIT]


def test_a_sanitize_failure_adopted_from_a_peer_is_not_written_behind_here():
    """The peer saves its own record (and may have ended the failure mode there since): a local change writes the
    unit's record only, never the adopted sanitize record over the peer's."""
    peer = unit_service.UnitAuthority([(T, 0)])
    peer.unit(T, 0).medium.request(A1, "sanitize", "w0.77")
    peer.unit(T, 0).medium.interrupted("w0.77")                 # failed there: sanitize failure mode
    peer.version = 5
    auth, unit, store, _ = _with_threaded_store()
    assert auth.adopt(peer.snapshot()) and unit.medium.sanitize == SANITIZE_FAILURE
    auth.mode_select(M.ModeSelect(T, 0, A1, False, False), "w0.1")
    store.record = unit.record()
    store.saves[-1][2](None)
    assert [save[0] for save in store.saves] == [unit_service.UNIT]


def _promises(auth, time_left=10.0):
    """Every `defer()` of `auth` from now on: a promise recording its answer (the reply) or its drop."""
    handed = []

    def defer():
        promise = SimpleNamespace(left=time_left, outcome=None)
        promise.time_left = lambda: promise.left
        promise.resolve = lambda reply: setattr(promise, "outcome", reply)
        promise.drop = lambda why, detail: setattr(promise, "outcome", ("dropped", why))
        handed.append(promise)
        return promise
    auth._defer = defer
    return handed


def test_a_sanitize_start_is_answered_only_once_its_record_is_saved_in_turn_with_the_units_requests():
    """A deferred store: the record that a sanitize runs is in the store before its worker is answered (and only then
    begins to overwrite the medium), so that a node serving the unit after this one died finds it failed. It waits
    behind the unit's reservation change being saved, and a request behind it waits for it; one whose deadline would
    pass during its save is dropped unsaved, unapplied."""
    auth, unit, store, _ = _with_threaded_store()
    promises = _promises(auth)
    auth.request(M.ReservationRequest.from_body(prout_body(A1, R.REGISTER, 0, 9)), "w0.1")
    auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize-ause", lun=0)), "w0.1")
    auth.request(M.ReservationRequest.from_body(prout_body(B, R.REGISTER, 0, 5)), "w1.2")
    (key, _, registered), = store.saves                     # the REGISTER's record first, the others behind it
    assert key == unit_service.UNIT and [p.outcome for p in promises] == [None, None, None]
    registered(None)
    assert promises[0].outcome.body.outcome["status"] == GOOD
    (key, record, saved) = store.saves[-1]
    assert (key, record) == (unit_service.SANITIZE, {"ause": True})
    assert unit.medium.sanitize == IDLE and promises[1].outcome is None and promises[2].outcome is None
    store.sanitize = record
    saved(None)
    answer = promises[1].outcome
    assert answer.body == M.MediumAnswer(T, 0, True, SANITIZING, None)
    assert _wire(answer.broadcasts) == [("medium.change", {"target": T, "lun": 0, "loaded": True,
                                                           "sanitize": SANITIZING})]
    assert unit.medium.sanitize == SANITIZING and unit.medium.ause and unit.medium.sanitizer == "w0.1"
    assert [save[:2] for save in store.saves].count((unit_service.SANITIZE, record)) == 1    # saved once
    assert store.saves[-1][0] == unit_service.UNIT         # B's REGISTER, in its turn
    store.saves[-1][2](None)
    assert promises[2].outcome.body.outcome["status"] == GOOD
    again = auth.medium_request(M.MediumRequest.from_body(medium(B, "sanitize", lun=0)), "w1.2")
    assert again.outcome.body.refused == [NOT_READY, SANITIZE_IN_PROGRESS]     # refused at once: nothing to save

    auth, unit, store, _ = _with_threaded_store()
    promises = _promises(auth, time_left=1.0)           # less than a save may take (3 s)
    auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize", lun=0)), "w0.1")
    assert promises[0].outcome == ("dropped", "expired") and unit.medium.sanitize == IDLE
    assert not [save for save in store.saves if save[0] == unit_service.SANITIZE]


def test_a_sanitize_start_whose_record_is_not_saved_does_not_begin():
    """The save failed (the cluster not answering), was held (behind a takeover's OSD map) or refused (another
    coordinator's write): the sanitize is refused with the sense a PR OUT gets for the same result, the unit stays as
    it was, on the worker too (the answer carries the medium's state: not sanitizing)."""
    auth, unit, store, _ = _with_threaded_store()
    promises = _promises(auth)
    results = [unit_service.StoreFailed("no answer from the Ceph cluster within 3 s"),
               unit_service.StoreBehind("not at the takeover's OSD map (epoch 7) yet"), unit_service.Stale(None, None)]
    for result in results:
        auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize", lun=0)), "w0.1")
        key, _, saved = store.saves[-1]
        assert key == unit_service.SANITIZE
        saved(result)
    assert [(p.outcome.body.sanitize, p.outcome.body.refused, p.outcome.broadcasts) for p in promises] == [
        (IDLE, [NOT_READY, LOGICAL_UNIT_COMMUNICATION_FAILURE], []), (IDLE, [NOT_READY, BECOMING_READY], []),
        (IDLE, [ABORTED_COMMAND, NO_ADDITIONAL_SENSE], [])]
    assert unit.medium.sanitize == IDLE and unit.medium.sanitizer is None
    assert [list(unit_service.unsaved_sense(result)) for result in results] == [p.outcome.body.refused
                                                                                for p in promises]
    for result in results:                                  # a PR OUT's, for the same results
        auth.request(M.ReservationRequest.from_body(prout_body(A1, R.REGISTER, 0, 9)), "w0.1")
        store.saves[-1][2](result)
    assert [p.outcome.body.outcome["sense"] for p in promises[3:]] == [
        build_sense(*unit_service.unsaved_sense(result)) for result in results]


def test_a_sanitize_start_whose_worker_died_meanwhile():
    """Its worker died while its record was saved: the unit is in sanitize failure mode (the record is there, and
    the initiator was never told whether it began), pushed to every worker; while it waited behind another save:
    dropped, nothing saved."""
    auth, unit, store, _ = _with_threaded_store()
    promises = _promises(auth)
    auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize", lun=0)), "w0.1")
    _, record, saved = store.saves[-1]
    auth.worker_gone("w0.1")
    store.sanitize = record
    saved(None)
    assert unit.medium.sanitize == SANITIZE_FAILURE
    assert _wire(promises[0].outcome.broadcasts) == [("medium.change", {"target": T, "lun": 0, "loaded": True,
                                                                        "sanitize": SANITIZE_FAILURE})]

    auth, unit, store, _ = _with_threaded_store()
    promises = _promises(auth)
    auth.request(M.ReservationRequest.from_body(prout_body(B, R.REGISTER, 0, 5)), "w1.2")
    auth.medium_request(M.MediumRequest.from_body(medium(A1, "sanitize", lun=0)), "w0.1")
    auth.worker_gone("w0.1")
    store.saves[-1][2](None)                                 # the REGISTER saved
    assert promises[1].outcome == ("dropped", "gone") and unit.medium.sanitize == IDLE
    assert not [save for save in store.saves if save[0] == unit_service.SANITIZE]
