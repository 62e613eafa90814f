"""target.reactor.Reactor on a real ring: tokens, dispatch, deferred calls (and those after the submission), failing
callbacks."""
import errno
import logging

import pytest

from ioring import Ring
from target.reactor import Reactor


@pytest.fixture
def reactor():
    with Ring(16) as ring:
        yield Reactor(ring)


def test_completions_reach_their_callbacks_once(reactor):
    seen = []
    tokens = [reactor.token(lambda res, i=i: seen.append((i, res))) for i in range(5)]
    assert len(set(tokens)) == 5
    for t in tokens:
        reactor.ring.prep_nop(t)
    handled = 0
    while handled < 5:
        handled += reactor.run_once(1.0)
    assert sorted(seen) == [(i, 0) for i in range(5)]
    assert reactor.run_once(0.01) == 0
    assert len(seen) == 5


def test_result_is_passed_through(reactor):
    seen = []
    reactor.ring.prep_timeout(0.001, reactor.token(seen.append))
    while not seen:
        reactor.run_once(1.0)
    assert seen == [-errno.ETIME]


def test_an_op_never_queued_is_forgotten_or_completed_as_told(reactor):
    seen = []
    dropped, failed = reactor.token(lambda res: seen.append(("dropped", res))), reactor.token(seen.append)
    reactor.not_queued(dropped)
    reactor.not_queued(failed, -errno.ECANCELED)
    assert seen == []                                   # not from inside the call: at the end of the turn
    reactor.ring.prep_nop(reactor.token(lambda res: None))
    reactor.run_once(1.0)
    assert seen == [-errno.ECANCELED]


def test_call_later_runs_once_the_time_has_passed(reactor):
    order = []
    reactor.call_later(0.05, lambda: order.append("later"))
    reactor.call_later(0.001, lambda: order.append("sooner"))
    while len(order) < 2:
        reactor.run_once(1.0)
    assert order == ["sooner", "later"]


def test_timeout_returns_zero(reactor):
    assert reactor.run_once(0.01) == 0


def test_call_soon_runs_after_the_completions(reactor):
    order = []

    def completed(res):
        order.append("completion")
        reactor.call_soon(order.append, "soon from callback")
    reactor.call_soon(lambda: order.append("soon"))
    reactor.ring.prep_nop(reactor.token(completed))
    reactor.run_once(1.0)
    assert order == ["completion", "soon", "soon from callback"]


def test_what_a_deferred_call_queues_completes_in_the_same_turn(reactor):
    """A turn's deferred calls queue its output (the responses' sends); the kernel completes a NOP, like a send the
    socket takes whole, while submitting it, and that completion is handled in the same turn, not the next."""
    order = []

    def respond():
        order.append("soon")
        reactor.ring.prep_nop(reactor.token(lambda res: (order.append("sent"), reactor.call_soon(
            lambda: order.append("soon after sent")))))
    reactor.ring.prep_nop(reactor.token(lambda res: (order.append("completion"), reactor.call_soon(respond))))
    assert reactor.run_once(1.0) == 2
    assert order == ["completion", "soon", "sent", "soon after sent"]


def test_call_after_submit_runs_once_the_answers_are_submitted(reactor):
    """What no answer waits for (the next receive) runs after the turn's output is submitted and its completions
    handled; the ops it queues go with the next turn's submission."""
    order = []

    def after():
        order.append("after")
        reactor.ring.prep_nop(reactor.token(lambda res: order.append("queued after")))

    def completed(res):
        order.append("completion")
        reactor.call_after_submit(after)
        reactor.call_soon(lambda: reactor.ring.prep_nop(reactor.token(lambda res: order.append("sent"))))
    reactor.ring.prep_nop(reactor.token(completed))
    assert reactor.run_once(1.0) == 2
    assert order == ["completion", "sent", "after"]
    assert reactor.run_once(1.0) == 1
    assert order == ["completion", "sent", "after", "queued after"]


def test_call_after_submit_without_deferred_calls_and_pending_does_not_block(reactor):
    order = []
    reactor.ring.prep_nop(reactor.token(lambda res: reactor.call_after_submit(order.append, "after the completion")))
    assert reactor.run_once(1.0) == 1
    assert order == ["after the completion"]
    reactor.call_after_submit(order.append, "queued between turns")
    assert reactor.run_once(None) == 0              # nothing in flight: would block forever otherwise
    assert order == ["after the completion", "queued between turns"]


def test_pending_call_soon_does_not_block(reactor):
    ran = []
    reactor.call_soon(lambda: ran.append(True))
    assert reactor.run_once(None) == 0              # nothing in flight: would block forever otherwise
    assert ran == [True]


def test_failing_callback_does_not_lose_the_batch(reactor, caplog):
    seen = []

    def boom(res):
        raise ValueError("boom")
    for cb in (seen.append, boom, seen.append):
        reactor.ring.prep_nop(reactor.token(cb))
    reactor.call_soon(lambda: 1 / 0)
    reactor.call_soon(lambda: seen.append("soon"))
    reactor.call_after_submit(lambda: {}["missing"])
    reactor.call_after_submit(lambda: seen.append("after"))
    with caplog.at_level(logging.ERROR, logger="ringtgt.target.reactor"):
        while len(seen) < 3:
            reactor.run_once(1.0)
    assert seen.count(0) == 2 and "soon" in seen and "after" in seen
    assert "ValueError: boom" in caplog.text and "ZeroDivisionError" in caplog.text and "KeyError" in caplog.text
