"""A stand-in RADOS client for the OSD-map barrier tests (tests/test_osdmap_sync.py, tests/test_coordinator_store_
osdmap.py): its wait for the latest OSD map blocks until the test lets it end (librados' real one, against a monitor
held stopped: tests/e2e/test_rbd_failover.py)."""
import threading

from target.backstore.base import BackstoreError
from target.backstore.rbd_image import CephClient

PATIENCE = 10.0             # seconds any awaited event gets: far above every deadline the tests set


class Client:
    """A RADOS client of `conf` whose wait for the latest OSD map ends when the test says (`reached`), failing the
    first `failures` times."""

    def __init__(self, conf: str, failures: int = 0):
        self.client = CephClient(conf)
        self.failures = failures
        self.reached = threading.Event()
        self.calls = 0

    def wait_for_latest_osdmap(self) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise BackstoreError(f"ceph client {self.client}: latest OSD map: Connection timed out")
        assert self.reached.wait(2 * PATIENCE)

    def close(self) -> None:
        """(RadosStateClient.close, which closes its connections)"""
