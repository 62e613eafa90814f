"""target.backstore.null: zeros out, writes dropped, every callback from a ring completion."""
import pytest

from ioring import Ring
from target.backstore.null import NullBackstore
from target.reactor import Reactor
from tests.backstore_helpers import complete


@pytest.fixture
def store():
    with Ring(16) as ring:
        reactor = Reactor(ring)
        yield reactor, NullBackstore(reactor, path=None, size=1 << 30, block_size=512)


def test_reads_return_zeros(store):
    reactor, null = store
    assert bytes(complete(reactor, lambda cb: null.read(0, 4096, cb))) == bytes(4096)
    assert bytes(complete(reactor, lambda cb: null.read(512, 65536, cb))) == bytes(65536)
    assert len(complete(reactor, lambda cb: null.read(0, 512, cb))) == 512


def test_writes_flush_unmap_complete(store):
    reactor, null = store
    assert complete(reactor, lambda cb: null.write(0, b"x" * 512, True, cb)) is None
    assert complete(reactor, null.flush) is None
    assert complete(reactor, lambda cb: null.unmap(0, 4096, cb)) is None
    assert bytes(complete(reactor, lambda cb: null.read(0, 512, cb))) == bytes(512)
    null.close()
