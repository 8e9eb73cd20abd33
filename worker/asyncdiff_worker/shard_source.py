"""Which shard a generation group renders next: the one the operator assigned, all of them, or the next one
claimed from a queue shared with the other local groups.

Why a claim folder for the local queue: ``asyncdiff run`` starts ``replicas`` torchrun groups on one machine; each
takes the next unclaimed shard when it is free, so a fast group does more shards and no shard runs twice. A claim
is a file created with ``O_CREAT | O_EXCL`` (atomic on a local filesystem). Only rank 0 of a group claims; the
runner broadcasts its choice to the group's other ranks. The groups start together: each announces itself
(``group-<g>.ready``) and waits until all have, so a group that starts faster (imports, model cache) cannot claim
every shard before the others are up; then group g first tries its own round-robin share (g, g + R, ...) and
afterwards takes whatever is left, so a faster group still finishes the others' shards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from asyncdiff_worker.keys import WorkerSlot

GROUP_WAIT_SECONDS = float(os.environ.get("ASYNCDIFF_GROUP_WAIT_SECONDS", "600"))


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


def wait_for_groups(queue: Path, group: int, groups: int, timeout: float) -> None:
    """Announce ``group`` in ``queue`` and wait until all ``groups`` have announced themselves."""
    queue.mkdir(parents=True, exist_ok=True)
    (queue / f"group-{group}.ready").write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + timeout
    while sum(1 for _ in queue.glob("group-*.ready")) < groups:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{queue}: only {sum(1 for _ in queue.glob('group-*.ready'))} of {groups} local groups started "
                f"within {timeout:g} s (see the other groups' errors)"
            )
        time.sleep(0.05)


def claim_order(num_shards: int, group: int | None, groups: int) -> list[int]:
    """Group ``group``'s own round-robin share first, then every other shard."""
    if group is None or groups <= 1:
        return list(range(num_shards))
    own = list(range(group, num_shards, groups))
    return own + [i for i in range(num_shards) if i % groups != group]


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
    if slot.queue is None:
        yield from range(num_shards)
        return
    if slot.group is not None and slot.groups > 1:
        wait_for_groups(slot.queue, slot.group, slot.groups, GROUP_WAIT_SECONDS)
    for index in claim_order(num_shards, slot.group, slot.groups):
        if claim(slot.queue, index, slot.rendered_by):
            yield index
