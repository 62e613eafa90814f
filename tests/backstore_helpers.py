"""Helpers for the backstore unit tests: run one asynchronous backstore call to completion on the reactor, and
write / read through a backstore that way."""
from target.reactor import Reactor

MiB = 1 << 20


def complete(reactor: Reactor, start):
    """start(callback), then run the reactor until the callback fires; its argument. The callback must
    not fire from inside start()."""
    results = []
    start(results.append)
    assert results == [], "callback ran synchronously"
    for _ in range(200):
        if results:
            break
        reactor.run_once(0.05)
    assert len(results) == 1
    return results[0]


def write(reactor, store, offset, data, fua=False):
    assert complete(reactor, lambda cb: store.write(offset, data, fua, cb)) is None


def read(reactor, store, offset, length) -> bytes:
    view = complete(reactor, lambda cb: store.read(offset, length, cb))
    assert isinstance(view, memoryview) and len(view) == length
    return bytes(view)
