"""Resume at output granularity: what a stored output carries in its metadata, and whether it can be reused.

Why in the object's own metadata: an output written for the same pixels (same ``output_hash``, see ``shards.py``)
is reused by any later run of the job, whether it is a retried shard, a new attempt, or the same manifest applied
again after the job was deleted: no side table can get out of step with the objects. The metadata also holds
everything the output's manifest record needs (size, checksum, dimensions, who rendered it and when), so a reused
output costs one HEAD request and no download. A record is rebuilt from metadata the same way whether the output
was rendered a moment ago or by an earlier attempt, so the manifest does not depend on which run rendered what.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from asyncdiff_worker.calls import OutputItem
from asyncdiff_worker.manifest import OutputRecord
from asyncdiff_worker.spec.uris import Location
from asyncdiff_worker.storage import ObjectInfo, Storage

HASH_KEY = "pixel-hash"


@dataclass(frozen=True)
class Rendering:
    """How one output was rendered (what goes into its metadata beside its identity)."""

    shard: int
    attempt: int
    index_retry: int
    rendered_by: str
    rendered_at: str
    seconds: float
    width: int
    height: int
    frames: int | None


def output_metadata(
    *, job_name: str, job_uid: str, item: OutputItem, pixel_hash: str, rendering: Rendering
) -> dict[str, str]:
    """Object metadata of one output (S3 user metadata; a sidecar for files). ASCII values only."""
    meta = {
        "job-name": job_name,
        "job-uid": job_uid,
        "output-index": str(item.index),
        "prompt-index": str(item.prompt_index),
        "image-index": str(item.image_index),
        "seed": str(item.seed),
        HASH_KEY: pixel_hash,
        "shard": str(rendering.shard),
        "attempt": str(rendering.attempt),
        "index-retry": str(rendering.index_retry),
        "rendered-by": rendering.rendered_by.encode("ascii", "replace").decode(),
        "rendered-at": rendering.rendered_at,
        "seconds": f"{rendering.seconds:.4f}",
        "width": str(rendering.width),
        "height": str(rendering.height),
    }
    if rendering.frames is not None:
        meta["frames"] = str(rendering.frames)
    return meta


def record_from_metadata(
    info: ObjectInfo, item: OutputItem, *, fmt: str, content_type: str, sha256: str | None = None
) -> OutputRecord | None:
    """The manifest record of a stored output, from its HEAD; None when the metadata is incomplete."""
    meta: Mapping[str, str] = {k.lower(): v for k, v in info.metadata.items()}
    try:
        frames = meta.get("frames")
        return OutputRecord(
            index=item.index,
            uri=info.uri,
            sha256=sha256 or meta["sha256"],
            bytes=info.size,
            seconds=float(meta["seconds"]),
            prompt_index=item.prompt_index,
            image_index=item.image_index,
            seed=item.seed,
            prompt=item.prompt,
            content_type=content_type,
            format=fmt,
            width=int(meta["width"]),
            height=int(meta["height"]),
            frames=int(frames) if frames is not None else None,
            shard=int(meta["shard"]),
            attempt=int(meta["attempt"]),
            index_retry=int(meta["index-retry"]),
            rendered_by=meta["rendered-by"],
            rendered_at=meta["rendered-at"],
            pixel_hash=meta[HASH_KEY],
        )
    except (KeyError, ValueError):
        return None


def reusable(
    storage: Storage, location: Location, item: OutputItem, expected_hash: str, *, fmt: str, content_type: str
) -> OutputRecord | None:
    """The record of the output stored at ``location`` if it was written for the same pixels, else None."""
    info = storage.head(location)
    if info is None:
        return None
    metadata = {k.lower(): v for k, v in info.metadata.items()}
    if metadata.get(HASH_KEY) != expected_hash or metadata.get("output-index") != str(item.index):
        return None
    return record_from_metadata(info, item, fmt=fmt, content_type=content_type)
