"""The blob store: its interface contract and the exact on-disk layout of the local backend."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.store import open_store
from modelyard.store.local import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    opened = open_store(f"file://{tmp_path / 'store'}")
    assert isinstance(opened, LocalBlobStore)
    return opened


def test_layout_after_one_put(store: LocalBlobStore) -> None:
    data = b"hello blobs"
    digest = hashlib.sha256(data).hexdigest()
    info = store.put(io.BytesIO(data))
    assert (info.sha256, info.size) == (digest, len(data))
    root = store.root
    assert sorted(p.name for p in root.iterdir()) == ["lock", "objects", "quarantine", "tmp"]
    shards = sorted(p.name for p in (root / "objects" / "sha256").iterdir())
    assert shards == [f"{i:02x}" for i in range(256)]
    blob = root / "objects" / "sha256" / digest[:2] / digest
    assert blob.read_bytes() == data
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    every_file = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert every_file == ["lock", f"objects/sha256/{digest[:2]}/{digest}"]


def test_put_computes_the_digest_and_is_idempotent(store: LocalBlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    first = store.put(io.BytesIO(data))
    second = store.put(io.BytesIO(data))
    assert first.sha256 == second.sha256 == hashlib.sha256(data).hexdigest()
    assert len(list(store.list())) == 1
    with store.open(first.sha256) as handle:
        assert handle.read() == data


def test_stat_has_all_verify_delete_list(store: LocalBlobStore) -> None:
    a = store.put(io.BytesIO(b"a"))
    b = store.put(io.BytesIO(b"b"))
    missing = "0" * 64
    assert store.stat(missing) is None
    assert store.stat(a.sha256) is not None
    assert store.has_all([a.sha256, b.sha256]) and not store.has_all([a.sha256, missing])
    assert {blob.sha256 for blob in store.list()} == {a.sha256, b.sha256}
    assert store.verify(a.sha256).status == "ok"
    assert store.verify(missing).status == "missing"
    store.delete(b.sha256)
    store.delete(b.sha256)  # absent: no error
    assert {blob.sha256 for blob in store.list()} == {a.sha256}
    with pytest.raises(NotFoundError, match=f"blob sha256:{b.sha256} is not in the store"):
        store.open(b.sha256)


def test_verify_detects_corruption_and_quarantine_moves_it_aside(store: LocalBlobStore) -> None:
    info = store.put(io.BytesIO(b"original"))
    path = store.blob_path(info.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    check = store.verify(info.sha256)
    assert check.status == "corrupt"
    assert check.actual_sha256 == hashlib.sha256(b"tampered").hexdigest()
    moved = store.quarantine(info.sha256)
    assert moved is not None and Path(moved).parent == store.quarantine_dir
    assert store.verify(info.sha256).status == "missing"
    store.put(io.BytesIO(b"original"))  # the good bytes can be stored again
    assert store.verify(info.sha256).status == "ok"


def test_nothing_is_visible_before_publish_and_discard_cleans_up(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(5 * 1024 * 1024))
    with store.writer() as writer:
        staged = writer.add_file(source)
        assert staged.bytes_added == source.stat().st_size
        assert store.stat(staged.sha256) is None  # staged, not visible
        assert len(list(store.tmp.iterdir())) == 1
        # leaving without publish() discards
    assert store.stat(staged.sha256) is None
    assert list(store.tmp.iterdir()) == []
    with store.writer() as writer:
        writer.add_file(source)
        writer.publish()
        writer.publish()  # idempotent
    assert store.stat(staged.sha256) is not None
    assert list(store.tmp.iterdir()) == []


def test_adding_a_stored_blob_stages_nothing(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "small.json"
    source.write_text("{}")
    store.put(io.BytesIO(b"{}"))
    with store.writer() as writer:
        staged = writer.add_file(source)
        assert (staged.method, staged.bytes_added) == ("existing", 0)
        assert list(store.tmp.iterdir()) == []


def test_two_files_with_the_same_content_are_stored_and_counted_once(store: LocalBlobStore, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    for name in ("best.bin", "epoch_10.bin"):
        (tmp_path / name).write_bytes(data)
    with store.writer() as writer:
        first = writer.add_file(tmp_path / "best.bin")
        second = writer.add_file(tmp_path / "epoch_10.bin")
        writer.publish()
    assert (first.bytes_added, second.bytes_added) == (len(data), 0)
    assert second.method == "existing"
    assert len(list(store.list())) == 1
    assert list(store.tmp.iterdir()) == []


def test_link_shares_the_inode_and_makes_it_read_only(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(1024))
    with store.writer() as writer:
        staged = writer.add_file(source, link=True)
        writer.publish()
    assert staged.method in ("hardlink", "reflink")
    blob = store.blob_path(staged.sha256)
    if staged.method == "hardlink":
        assert blob.stat().st_ino == source.stat().st_ino
        assert stat.S_IMODE(source.stat().st_mode) == 0o444


def test_linking_an_already_stored_file_leaves_it_as_it_was(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"same bytes")
    os.chmod(source, 0o640)
    store.put(io.BytesIO(b"same bytes"))
    with store.writer() as writer:
        staged = writer.add_file(source, link=True)
        writer.publish()
    assert staged.method == "existing"
    assert stat.S_IMODE(source.stat().st_mode) == 0o640
    assert source.stat().st_nlink == 1


def test_unreadable_source_names_the_file(store: LocalBlobStore, tmp_path: Path) -> None:
    with store.writer() as writer, pytest.raises(InvalidInputError) as caught:
        writer.add_file(tmp_path / "absent.bin")
    assert str(tmp_path / "absent.bin") in str(caught.value)
    assert list(store.tmp.iterdir()) == []


def test_unknown_store_scheme_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown store URL scheme 'gopher'; known: file://"):
        open_store("gopher://x/y")


def test_link_removes_write_bits_without_widening_read_access(store: LocalBlobStore, tmp_path: Path) -> None:
    private = tmp_path / "private.bin"
    private.write_bytes(os.urandom(2048))
    os.chmod(private, 0o600)
    with store.writer() as writer:
        staged = writer.add_file(private, link=True)
        writer.publish()
    if staged.method == "hardlink":
        assert stat.S_IMODE(private.stat().st_mode) == 0o400


def test_a_discarded_link_batch_gives_files_their_modes_back(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "w.bin"
    source.write_bytes(os.urandom(2048))
    os.chmod(source, 0o640)
    with store.writer() as writer:
        staged = writer.add_file(source, link=True)
        if staged.method == "hardlink":
            assert stat.S_IMODE(source.stat().st_mode) == 0o440
    assert stat.S_IMODE(source.stat().st_mode) == 0o640
    assert source.stat().st_nlink == 1
    assert list(store.tmp.iterdir()) == []


def test_has_all_sees_a_missing_blob_in_either_half_of_a_long_list(store: LocalBlobStore) -> None:
    present = store.put(io.BytesIO(b"here")).sha256
    missing = "0" * 64
    many = [present] * 6000
    assert store.has_all(many)
    assert not store.has_all([*many, missing])
    assert not store.has_all([missing, *many])


def test_a_large_file_from_another_filesystem_is_copied_through_a_buffer(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temporary directory")
    store_root = shm / f"modelyard-store-{os.getpid()}"
    source = tmp_path / "big.bin"
    data = os.urandom(9 * 1024 * 1024)  # above the kernel-copy threshold
    source.write_bytes(data)
    try:
        store = LocalBlobStore(store_root)
        with store.writer() as writer:
            staged = writer.add_file(source)
            writer.publish()
        assert staged.sha256 == hashlib.sha256(data).hexdigest()
        assert store.verify(staged.sha256).status == "ok"
        assert list(store.tmp.iterdir()) == []
    finally:
        import shutil

        shutil.rmtree(store_root, ignore_errors=True)
