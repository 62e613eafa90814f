"""backstore/images.py: an image is created at most once, recorded, and refused when missing or replaced."""
import errno
import os
import resource
import stat

import pytest

from target.backstore import images
from target.backstore.file import ImageIdentity

IQN = "iqn.2026-11.org.test:t"
MiB = 1 << 20


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def prepare(state, path, size=MiB):
    return images.prepare(state, IQN, 0, str(path), size, 512, False)


def test_created_once_sparse_with_parent_dirs_and_recorded(state, tmp_path):
    path = tmp_path / "deep/er/lun.img"
    identity = prepare(state, path, 1 << 30)
    st = os.stat(path)
    assert st.st_size == 1 << 30 and st.st_blocks * 512 < MiB
    assert (identity.block, identity.device, identity.inode) == (False, st.st_dev, st.st_ino)
    assert images.recorded(state, IQN, 0, str(path)) == identity
    assert prepare(state, path, 1 << 30) == identity            # the next start: the same file, nothing made


def test_a_missing_image_with_a_record_is_refused_and_not_made_again(state, tmp_path):
    path = tmp_path / "lun.img"
    prepare(state, path)
    path.unlink()
    with pytest.raises(images.ImageError, match=f"image {path} is missing.*remove .*{IQN}-0.json"):
        prepare(state, path)
    assert not path.exists()


def test_a_replaced_image_is_refused(state, tmp_path):
    path = tmp_path / "lun.img"
    prepare(state, path)
    (tmp_path / "new").write_bytes(bytes(MiB))
    os.replace(tmp_path / "new", path)
    with pytest.raises(images.ImageError, match=f"image {path} was replaced: it is now inode"):
        prepare(state, path)


def test_an_existing_file_without_record_is_adopted_and_extended_never_truncated(state, tmp_path):
    path = tmp_path / "lun.img"
    path.write_bytes(b"keep" * 1024)
    identity = prepare(state, path)
    assert path.read_bytes()[:4096] == b"keep" * 1024 and path.stat().st_size == MiB
    assert identity.inode == path.stat().st_ino
    (tmp_path / "other.img").write_bytes(bytes(MiB))             # the configuration now names another path
    assert prepare(state, tmp_path / "other.img").inode == (tmp_path / "other.img").stat().st_ino


@pytest.mark.parametrize("name, reason", [("afile/lun.img", "File exists|Not a directory"),
                                          ("/dev/ringtgt-test-lun", "a device node is never created")])
def test_an_image_that_cannot_be_created_names_path_and_reason(state, tmp_path, name, reason):
    (tmp_path / "afile").write_bytes(b"")
    path = name if os.path.isabs(name) else tmp_path / name
    with pytest.raises(images.ImageError, match=f"image {path}.*({reason})"):
        prepare(state, path)
    assert not os.path.exists(path)


def test_a_block_device_is_its_device_number(tmp_path):
    first, again = tmp_path / "sdx", tmp_path / "sdx-again"
    for node in (first, again):
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    identity = ImageIdentity.of(os.stat(first))
    assert identity == ImageIdentity(True, os.makedev(7, 200), 0) == ImageIdentity.of(os.stat(again))
    first.unlink()
    os.rename(again, first)                                     # a node made again (udev): the same image
    assert images.gone(str(first), identity) is None


def test_gone_says_missing_or_replaced(tmp_path):
    path = tmp_path / "lun.img"
    path.write_bytes(b"")
    identity = images.prepare(str(tmp_path / "state"), IQN, 0, str(path), MiB, 512, False)
    assert images.gone(str(path), identity) is None
    (tmp_path / "new").write_bytes(b"")
    path.unlink()
    assert images.gone(str(path), identity) == f"image {path} is missing (No such file or directory)"
    os.rename(tmp_path / "new", path)
    assert images.gone(str(path), identity).startswith(f"image {path} was replaced: it is now inode")


def test_out_of_descriptors_gone_cannot_tell_rather_than_call_the_image_missing(tmp_path):
    path = tmp_path / "lun.img"
    path.write_bytes(b"")
    identity = images.prepare(str(tmp_path / "state"), IQN, 0, str(path), MiB, 512, False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(OSError) as raised:
            while True:                                 # every descriptor taken: the check's own open fails
                held.append(os.open("/dev/null", os.O_RDONLY))
        assert raised.value.errno == errno.EMFILE
        with pytest.raises(OSError) as raised:
            images.gone(str(path), identity)
        assert raised.value.errno == errno.EMFILE
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert images.gone(str(path), identity) is None


def test_the_offline_marker_is_written_once_and_cleared_by_a_start_with_the_image_in_place(state, tmp_path):
    path = tmp_path / "lun.img"
    prepare(state, path)
    assert images.offline_reason(state, IQN, 0) is None
    assert images.mark_offline(state, IQN, 0, "image gone")
    assert not images.mark_offline(state, IQN, 0, "image gone again")
    assert images.offline_reason(state, IQN, 0) == "image gone"
    prepare(state, path)
    assert images.offline_reason(state, IQN, 0) is None


def test_an_unreadable_record_names_itself(state, tmp_path):
    prepare(state, tmp_path / "lun.img")
    with open(images.record_path(state, IQN, 0), "w") as f:
        f.write("{")
    with pytest.raises(images.ImageError, match=f"image record .*{IQN}-0.json: unreadable"):
        prepare(state, tmp_path / "lun.img")
