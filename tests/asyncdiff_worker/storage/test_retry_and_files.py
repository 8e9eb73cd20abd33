"""Backoff arithmetic and the file:// backend."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest
from asyncdiff_worker.errors import StorageRejected
from asyncdiff_worker.storage import ObjectTooLarge, Storage, StorageNotFound
from asyncdiff_worker.storage.retry import RetriesExhausted, backoff_delay, call_with_retries


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    rng = random.Random(0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (10, 8.0)):
        delays = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8


def test_call_with_retries() -> None:
    sleeps: list[float] = []
    outcomes: list[BaseException | str] = [ConnectionError("down"), ConnectionError("down"), "ok"]

    def flaky() -> str:
        item = outcomes.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    retryable = lambda e: isinstance(e, ConnectionError)  # noqa: E731
    assert (
        call_with_retries(flaky, what="op", attempts=3, is_retryable=retryable, base=0.1, sleep=sleeps.append) == "ok"
    )
    assert len(sleeps) == 2
    with pytest.raises(RetriesExhausted, match="op: failed after 2 attempt"):
        call_with_retries(
            lambda: (_ for _ in ()).throw(ConnectionError("x")),
            what="op",
            attempts=2,
            is_retryable=retryable,
            sleep=sleeps.append,
        )
    with pytest.raises(ValueError):  # not retryable: raised at once
        call_with_retries(
            lambda: (_ for _ in ()).throw(ValueError("bad")),
            what="op",
            attempts=5,
            is_retryable=retryable,
            sleep=sleeps.append,
        )


def test_file_backend(tmp_path: Path) -> None:
    storage = Storage()
    uri = f"file://{tmp_path}/out/j1/outputs/00000-p0000.png"
    result = storage.put(uri, b"png", content_type="image/png", metadata={"seed": "1"})
    assert result.bytes == 3 and len(result.sha256) == 64
    storage.put(uri, b"png2", content_type="image/png")
    assert storage.get(uri) == b"png2"
    assert [o.key for o in storage.list(f"file://{tmp_path}/out/j1")] == ["outputs/00000-p0000.png"]
    assert not list((tmp_path / "out/j1/outputs").glob("*.tmp"))
    with pytest.raises(ObjectTooLarge):
        storage.get(uri, max_bytes=1)
    with pytest.raises(StorageNotFound):
        storage.get(f"file://{tmp_path}/nope.png")
    storage.delete(uri)
    storage.delete(uri)  # idempotent
    assert storage.list(f"file://{tmp_path}/out/j1") == []


def test_file_backend_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageRejected, match="not writable"):
        Storage().check_writable(f"file://{blocker}/sub")


def test_files_are_readable_by_the_group_as_with_open(tmp_path: Path) -> None:
    """Outputs and the manifest get 0666 less the umask (0644 under the usual 022), not mkstemp's 0600."""
    previous = os.umask(0o022)
    try:
        uri = f"file://{tmp_path}/out/a.png"
        Storage().put(uri, b"x", content_type="image/png")
        mode = stat.S_IMODE((tmp_path / "out/a.png").stat().st_mode)
        assert mode == 0o644, oct(mode)
        os.umask(0o077)
        Storage().put(uri, b"y", content_type="image/png")
        assert stat.S_IMODE((tmp_path / "out/a.png").stat().st_mode) == 0o600  # a private umask is respected
    finally:
        os.umask(previous)


def test_download_copies_a_file_uri(tmp_path: Path) -> None:
    storage = Storage()
    storage.put(f"file://{tmp_path}/src/a.png", b"abc", content_type="image/png")
    assert storage.download(f"file://{tmp_path}/src/a.png", tmp_path / "dl" / "a.png") == 3
    assert (tmp_path / "dl" / "a.png").read_bytes() == b"abc"
    with pytest.raises(StorageNotFound):
        storage.download(f"file://{tmp_path}/src/missing.png", tmp_path / "dl" / "b.png")
