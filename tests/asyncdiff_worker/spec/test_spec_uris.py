"""URI parsing shared by the spec, the storage layer and the preflight checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncdiff_worker.spec.uris import Location, parse_location


def test_s3_locations() -> None:
    loc = parse_location("s3://my-bucket/a/b/")
    assert loc == Location("s3", "my-bucket", "a/b")
    assert loc.uri == "s3://my-bucket/a/b"
    assert loc.child("job", "outputs/x.png").uri == "s3://my-bucket/a/b/job/outputs/x.png"
    assert parse_location("s3://my-bucket").child("k").uri == "s3://my-bucket/k"


def test_file_uris_and_paths(tmp_path: Path) -> None:
    assert parse_location(f"file://{tmp_path}").path == tmp_path
    assert parse_location(str(tmp_path)).uri == f"file://{tmp_path}"
    assert parse_location("rel/dir", base_dir=tmp_path).path == tmp_path / "rel" / "dir"
    assert parse_location("file:///a%20b").path == Path("/a b")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "is empty"),
        ("s3://ab/x", "'ab' is not a valid S3 bucket name"),
        ("s3://UPPER/x", "'UPPER' is not a valid S3 bucket name"),
        ("http://host/x", "scheme 'http' is not supported"),
        ("file://host/x", "file URIs must be file:///absolute/path (no host)"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_location(uri)
