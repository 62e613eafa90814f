"""target.backstore.encrypted over a real file: only ciphertext on the medium, holes still read as zeros, a new
key (CRYPTO ERASE) leaves old blocks unreadable, another worker's new key is picked up, atomic writes are
journaled encrypted, and a bad key file is an open error."""
import stat

import pytest

from target.backstore import BackstoreError
from target.backstore.encrypted import KEY_BYTES, EncryptedBackstore
from tests.backstore_helpers import complete, read, write


@pytest.fixture
def encrypted(opener, tmp_path):
    def open_(**kwargs):
        return opener(encryption_key=str(tmp_path / "lun.key"), **kwargs)
    return open_


def on_disk(tmp_path, offset, length, name="lun.img"):
    with open(tmp_path / name, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_blocks_are_stored_encrypted_and_read_back_plain(reactor, encrypted, tmp_path):
    store = encrypted()
    assert isinstance(store, EncryptedBackstore)
    key = tmp_path / "lun.key"
    assert len(key.read_bytes()) == KEY_BYTES and stat.S_IMODE(key.stat().st_mode) == 0o600
    data = b"secret!!" * 512
    write(reactor, store, 4096, data)
    assert read(reactor, store, 4096, len(data)) == data
    stored = on_disk(tmp_path, 4096, len(data))
    assert b"secret" not in stored
    assert stored[:512] != stored[512:1024]                     # each block its own tweak: no repeated pattern
    assert read(reactor, store, 0, 4096) == bytes(4096)         # never written: a hole reads as zeros
    assert complete(reactor, lambda cb: store.unmap(4096, 512, cb)) is None
    assert read(reactor, store, 4096, 1024) == bytes(512) + data[512:1024]


def test_a_new_key_leaves_old_blocks_unreadable_and_other_workers_follow(reactor, encrypted):
    store, other = encrypted(), encrypted()
    write(reactor, store, 0, b"a" * 4096)
    store.rekey()
    assert b"a" * 16 not in read(reactor, store, 0, 4096)
    write(reactor, store, 0, b"b" * 512)
    other.reload_key()
    assert read(reactor, other, 0, 512) == b"b" * 512


def test_atomic_writes_are_journaled_encrypted(reactor, encrypted, tmp_path):
    store = encrypted()
    assert store.max_atomic_bytes
    assert complete(reactor, lambda cb: store.atomic_write(0, b"atomic!!" * 128, cb)) is None
    assert read(reactor, store, 0, 1024) == b"atomic!!" * 128
    assert b"atomic!!" not in (tmp_path / "lun.img.atomic").read_bytes()


@pytest.mark.parametrize("content", [b"short", bytes(KEY_BYTES), b"k" * KEY_BYTES])
def test_a_key_file_that_is_not_two_aes_keys_is_refused(reactor, encrypted, tmp_path, content):
    (tmp_path / "lun.key").write_bytes(content)
    with pytest.raises(BackstoreError, match="encryption key .*lun.key: must hold 64 bytes"):
        encrypted()
