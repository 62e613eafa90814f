"""Fixtures shared by the unit tests: a reactor on a real ring, an opener of file backstores in tmp_path (the image
created first when missing, as the supervisor does; closed at teardown), and `h`, a SCSI harness (tests/scsi_harness.py)
whose power-on unit attention is consumed."""
import os

import pytest

from ioring import Ring
from target.backstore import images, open_backstore
from target.reactor import Reactor
from tests.backstore_helpers import MiB
from tests.scsi_harness import Harness


@pytest.fixture
def reactor():
    with Ring(64) as ring:
        yield Reactor(ring)


@pytest.fixture
def opener(reactor, tmp_path):
    stores = []

    def open_(name="lun.img", size=4 * MiB, **kwargs):
        kwargs.setdefault("block_size", 512)
        path = name if os.path.isabs(name) else str(tmp_path / name)
        if not os.path.lexists(path):
            images.create(path, size or 0)
        store = open_backstore("file", reactor, path=path, size=size, **kwargs)
        stores.append(store)
        return store
    yield open_
    for store in stores:
        store.close()


@pytest.fixture
def h():
    harness = Harness()
    harness.ready()
    return harness


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory):
    """One Ceph cluster (tests/ceph_cluster.py) for the whole session, started by the first test that asks; with
    cephx, so that a client of its own (CephCluster.client_keyring) can be tried as well as the admin."""
    from tests.ceph_cluster import CephCluster
    with CephCluster(tmp_path_factory.mktemp("ceph"), cephx=True) as cluster:
        print(f"\nCeph cluster started in {cluster.start_seconds:.1f} s")
        yield cluster
