"""Which shard a generation group renders next: the one the operator assigned, all of them, or the next one
claimed from a queue shared with the other local groups.

Why a claim folder for the local queue: ``asyncdiff run`` starts ``replicas`` torchrun groups on one machine; each
takes the next unclaimed shard when it is free, so a fast group does more shards and no shard runs twice. A claim
is a file created with ``O_CREAT | O_EXCL`` (atomic on a local filesystem). Only rank 0 of a group claims; the
runner broadcasts its choice to the group's other ranks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from asyncdiff_worker.keys import WorkerSlot


def claim(queue: Path, index: int, owner: str) -> bool:
    """Claim shard ``index`` in ``queue``; False when another group has it."""
    queue.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(queue / f"{index:05d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(owner + "\n")
    return True


def shards_for(slot: WorkerSlot, num_shards: int) -> Iterator[int]:
    """The shards this group renders, in order (evaluated lazily: a queue claim happens when the group asks)."""
    if slot.shard_index is not None:
        if slot.shard_index >= num_shards:
            raise ValueError(
                f"$ASYNCDIFF_SHARD_INDEX: {slot.shard_index} is outside the job's {num_shards} shard(s) "
                f"(0..{num_shards - 1})"
            )
        yield slot.shard_index
        return
    for index in range(num_shards):
        if slot.queue is None or claim(slot.queue, index, slot.rendered_by):
            yield index
