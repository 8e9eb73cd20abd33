"""The S3 backend against moto's real HTTP server: checksums, metadata, multipart, errors and retries."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.errors import StorageRejected, StorageUnavailable
from asyncdiff_worker.launch import free_port
from asyncdiff_worker.storage import ObjectTooLarge, S3Settings, Storage, StorageNotFound, TransferSettings


def store(endpoint: str, **transfer: Any) -> Storage:
    settings = TransferSettings(**({"attempts": 3, "backoff_seconds": 0.05, "connect_timeout": 2} | transfer))
    return Storage(S3Settings(endpoint_url=endpoint, region="us-east-1", force_path_style=True), settings)


def test_put_sets_content_type_metadata_and_sha256(s3_server: EmbeddedS3, s3: Any, bucket: str) -> None:
    data = b"\x89PNG fake image bytes" * 100
    result = store(s3_server.endpoint_url).put(
        f"s3://{bucket}/jobs/j1/outputs/00000-p0000.png",
        data,
        content_type="image/png",
        metadata={"job-uid": "uid-1", "prompt-index": "0", "seed": "42"},
    )
    digest = hashlib.sha256(data).digest()
    assert result.sha256 == digest.hex() and result.bytes == len(data) and result.parts == 1
    head = s3.head_object(Bucket=bucket, Key="jobs/j1/outputs/00000-p0000.png", ChecksumMode="ENABLED")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"job-uid": "uid-1", "prompt-index": "0", "seed": "42", "sha256": digest.hex()}
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    body = s3.get_object(Bucket=bucket, Key="jobs/j1/outputs/00000-p0000.png")["Body"].read()
    assert body == data


def test_multipart_for_large_objects(s3_server: EmbeddedS3, s3: Any, bucket: str) -> None:
    mib = 1024 * 1024
    data = os.urandom(11 * mib)
    storage = store(s3_server.endpoint_url, multipart_threshold=5 * mib, part_size=5 * mib)
    result = storage.put(f"s3://{bucket}/big.mp4", data, content_type="video/mp4", metadata={"seed": "1"})
    assert result.parts == 3
    head = s3.head_object(Bucket=bucket, Key="big.mp4")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert storage.get(f"s3://{bucket}/big.mp4") == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_same_key_overwrites(s3_server: EmbeddedS3, s3: Any, bucket: str) -> None:
    storage = store(s3_server.endpoint_url)
    for content in (b"first", b"second"):
        storage.put(f"s3://{bucket}/j/outputs/00000-p0000.png", content, content_type="image/png")
    listed = storage.list(f"s3://{bucket}/j")
    assert [o.key for o in listed] == ["j/outputs/00000-p0000.png"]
    assert storage.get(f"s3://{bucket}/j/outputs/00000-p0000.png") == b"second"
    storage.delete(f"s3://{bucket}/j/outputs/00000-p0000.png")
    assert storage.list(f"s3://{bucket}/j") == []


def test_errors(s3_server: EmbeddedS3, bucket: str) -> None:
    storage = store(s3_server.endpoint_url)
    with pytest.raises(StorageNotFound, match="object does not exist"):
        storage.get(f"s3://{bucket}/missing.png")
    with pytest.raises(StorageNotFound, match="bucket does not exist"):
        storage.get("s3://no-such-bucket-x/missing.png")
    with pytest.raises(StorageRejected, match="s3://no-such-bucket-x: bucket does not exist"):
        storage.put("s3://no-such-bucket-x/a.png", b"x", content_type="image/png")
    with pytest.raises(StorageRejected, match="bucket does not exist"):
        storage.check_writable("s3://no-such-bucket-x/prefix")
    storage.check_writable(f"s3://{bucket}/prefix")
    storage.put(f"s3://{bucket}/big.bin", b"x" * 100, content_type="application/octet-stream")
    with pytest.raises(ObjectTooLarge):
        storage.get(f"s3://{bucket}/big.bin", max_bytes=10)


def test_unreachable_endpoint_retries_then_fails_retryable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    storage = store(dead, attempts=3, backoff_seconds=0.05)
    with pytest.raises(StorageUnavailable, match="failed after 3 attempts") as info:
        storage.put("s3://some-bucket/a.png", b"x", content_type="image/png")
    assert "EndpointConnectionError" in str(info.value)
    assert info.value.code == 20


def test_transient_outage_is_retried_to_success(
    s3: Any, bucket: str, cuttable_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy resets the first two connections; the third attempt reaches the server."""
    proxy = cuttable_proxy(drop_first=2)
    storage = store(proxy.endpoint, attempts=3, backoff_seconds=0.05)
    with caplog.at_level("WARNING", logger="asyncdiff_worker.storage"):
        storage.put(f"s3://{bucket}/r.png", b"data", content_type="image/png")
    assert proxy.dropped == 2
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["upload"] * 2
    assert "attempt 1/3 failed" in caplog.records[0].getMessage()
    assert s3.get_object(Bucket=bucket, Key="r.png")["Body"].read() == b"data"


def test_download(s3_server: EmbeddedS3, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/file.bin", Body=b"abc" * 1000)
    dest = tmp_path / "file.bin"
    assert store(s3_server.endpoint_url).download(f"s3://{bucket}/m/file.bin", dest) == 3000
    assert dest.read_bytes() == b"abc" * 1000


def test_wrong_credentials_are_a_user_error(iam_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    storage = store(iam_s3["endpoint"])
    uri = f"s3://{iam_s3['bucket']}/jobs"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_s3["secret"])
    storage.check_writable(uri)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageRejected, match=r"access denied \(SignatureDoesNotMatch\): the secret access key"):
        store(iam_s3["endpoint"]).check_writable(uri)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    with pytest.raises(StorageRejected, match=r"access denied \(InvalidAccessKeyId\)"):
        store(iam_s3["endpoint"]).put(f"{uri}/x.png", b"x", content_type="image/png")


def test_credentials_from_a_mounted_secret(
    iam_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text(iam_s3["key"] + "\n")
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(iam_s3["secret"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("ASYNCDIFF_S3_SECRET_DIR", str(secret))
    storage = store(iam_s3["endpoint"])
    storage.put(f"s3://{iam_s3['bucket']}/secret.txt", b"ok", content_type="text/plain")
    assert storage.get(f"s3://{iam_s3['bucket']}/secret.txt") == b"ok"
