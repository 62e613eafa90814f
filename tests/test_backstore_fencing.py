"""target/backstore/fencing.py's parts that need no cluster (the rest runs in tests/e2e/test_rbd_failover.py): the
addresses librados reports, as the blocklist takes them; coordinator/fencer.py's pools of a configuration and its
reading of the fencing process's line."""
from coordinator.fencer import _result, rbd_pools
from target.backstore.fencing import addresses
from target.config import loads_config


def test_one_address_or_a_vector_of_them():
    assert addresses("127.0.0.1:0/2713464567") == ["127.0.0.1:0/2713464567"]
    assert addresses("[v2:192.0.2.1:0/7,v1:192.0.2.1:0/7]") == ["192.0.2.1:0/7"]
    assert addresses("[v2:[2001:db8::1]:0/9]") == addresses("[2001:db8::1]:0/9") == ["[2001:db8::1]:0/9"]


def test_the_pools_to_fence_are_each_rbd_luns_pool_and_client_once():
    config = loads_config("""
[[target]]
iqn = "iqn.2026-11.org.ringtgt:t"
[[target.lun]]
id = 0
backstore = "rbd"
pool = "rbd"
image = "a"
[[target.lun]]
id = 1
backstore = "rbd"
pool = "rbd"
image = "b"
[[target.lun]]
id = 2
backstore = "rbd"
pool = "fast"
image = "c"
ceph_conf = "/etc/ceph/other.conf"
[[target.lun]]
id = 3
path = "x.img"
size = "1MiB"
""")
    assert rbd_pools(config) == [[None, None, None, "rbd"], ["/etc/ceph/other.conf", None, None, "fast"]]


def test_the_fencing_process_line_gives_the_blocklists_osd_map_epoch_per_cluster():
    line = ('{"fenced": ["192.0.2.1:0/7"], "errors": [], "seconds": {"blocklist": 0.4}, "refused": "", '
            '"epochs": {"/etc/ceph/ceph.conf": 42}}')
    fenced = _result(f"librados chatter\n{line}\n", 0, "")
    assert (fenced.addresses, fenced.error, fenced.epochs) == (["192.0.2.1:0/7"], "", {"/etc/ceph/ceph.conf": 42})
    assert "exited 1" in _result("Traceback …", 1, "").error
