"""The node-local model cache: one download per node under a lock, re-download when the model changes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.errors import ModelNotFound
from asyncdiff_worker.storage import S3Settings, Storage
from asyncdiff_worker.storage.model_cache import MARKER, resolve_model


def make_model(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="models/m1/model_index.json", Body=b'{"_class_name": "X"}')
    s3.put_object(Bucket=bucket, Key="models/m1/unet/config.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="models/m1/unet/weights.bin", Body=b"w" * 10000)


def storage(s3_server: EmbeddedS3) -> Storage:
    return Storage(S3Settings(endpoint_url=s3_server.endpoint_url, force_path_style=True))


def test_downloads_once_for_concurrent_ranks(s3_server: EmbeddedS3, s3: Any, bucket: str, tmp_path: Path) -> None:
    make_model(s3, bucket)
    downloads: list[int] = []
    results: list[Path] = []

    def rank() -> None:
        path = resolve_model(
            f"s3://{bucket}/models/m1",
            storage(s3_server),
            cache_dir=tmp_path,
            on_download=lambda done, total: downloads.append(done),
        )
        results.append(path)

    threads = [threading.Thread(target=rank) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    folder = results[0]
    assert (folder / "unet" / "weights.bin").read_bytes() == b"w" * 10000
    assert (folder / MARKER).is_file()
    assert len(downloads) == 3  # three files, downloaded by one rank only
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [folder.name]

    s3.put_object(Bucket=bucket, Key="models/m1/unet/weights.bin", Body=b"v" * 10)  # the model changed
    again = resolve_model(
        f"s3://{bucket}/models/m1",
        storage(s3_server),
        cache_dir=tmp_path,
        on_download=lambda done, total: downloads.append(done),
    )
    assert again == folder and (folder / "unet" / "weights.bin").read_bytes() == b"v" * 10
    assert len(downloads) == 6


def test_missing_models(s3_server: EmbeddedS3, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no objects under this prefix"):
        resolve_model(f"s3://{bucket}/models/none", storage(s3_server), cache_dir=tmp_path)
    with pytest.raises(ModelNotFound, match="bucket does not exist"):
        resolve_model("s3://missing-bucket-zz/m", storage(s3_server), cache_dir=tmp_path)
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), Storage(), cache_dir=tmp_path)
    assert resolve_model(str(tmp_path), Storage()) == tmp_path
