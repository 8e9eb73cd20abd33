"""Classifier-free guidance parallelism: two mirrored stage groups, one per half of every guided denoiser call.

Why: a guided pipeline runs its denoiser on a batch of two halves (unconditional, then conditional: every supported
diffusers pipeline concatenates ``[negative, positive]``) that never interact until the guidance step. Running the
halves on two groups of ranks is exact (only float reordering from the smaller batch) and halves the work per rank.
Each group runs the ordinary AsyncDiff schedule on its half, with block outputs sent only inside the group; once per
step the two halves of the prediction are joined by an all-gather between each rank and its mirror in the other
group (2 ranks), so every rank ends with the full prediction and runs the same guidance and scheduler step.

Ranks: group g holds global ranks ``g * S .. g * S + S - 1`` (S = model_n + stride - 1); rank r's mirror is
``(r + S) % (2 S)``. Process groups are created by :func:`cfg_topology` on every rank in one fixed order (NCCL and
gloo require ``new_group`` to be called identically everywhere). Guidance off (scale <= 1) on a CFG-parallel object
raises :class:`ConfigError` before any collective: there is no second half, and running the same batch on both
groups would only waste half the devices silently.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.utils._pytree as pytree

from asyncdiff.errors import ConfigError
from asyncdiff.families import FAMILIES


@dataclass(frozen=True)
class Topology:
    """Where this rank sits: its stage group (the ranks that split one denoiser) and, with CFG, its mirror pair."""

    cfg_parallel: bool
    stage_world: int
    """Ranks of one stage group: model_n + stride - 1."""
    half: int
    """0: the first half of the batch (unconditional), 1: the second (conditional); 0 without CFG."""
    stage_rank: int
    """This rank's index inside its stage group (its AsyncDiff role)."""
    base: int
    """Global rank of the stage group's first rank."""
    stage_group: Any = None
    """The stage group's process group (None: the default group, when there is only one stage group)."""
    pair_group: Any = None
    """This rank and its mirror in the other stage group (CFG only)."""

    def global_rank(self, stage_rank: int) -> int:
        return self.base + stage_rank


def cfg_topology(rank: int, world: int, stage_world: int, cfg_parallel: bool) -> Topology:
    """Build the process groups; every rank must call this with the same arguments, in the same order of calls."""
    if not cfg_parallel:
        return Topology(False, stage_world, 0, rank, 0)
    assert world == 2 * stage_world, (world, stage_world)
    stage_groups = [dist.new_group(list(range(g * stage_world, (g + 1) * stage_world))) for g in range(2)]
    pair_groups = [dist.new_group([r, r + stage_world]) for r in range(stage_world)]
    half, stage_rank = divmod(rank, stage_world)
    return Topology(
        True, stage_world, half, stage_rank, half * stage_world, stage_groups[half], pair_groups[stage_rank]
    )


def guidance_parameter(pipeline_cls: type) -> str | None:
    """The call parameter that switches classifier-free guidance on (> 1) for this pipeline class, or None."""
    for klass in pipeline_cls.__mro__:
        for family in FAMILIES.values():
            if klass.__name__ in family.pipeline_classes:
                name = family.guidance
                if name is None or name not in inspect.signature(pipeline_cls.__call__).parameters:
                    return None
                return name
    return None


def require_guidance(pipeline_cls: type) -> str:
    """The guidance parameter, or a ConfigError: cfg_parallel needs a pipeline that batches two guidance halves."""
    name = guidance_parameter(pipeline_cls)
    if name is None:
        raise ConfigError(
            "cfg_parallel",
            True,
            f"False for {pipeline_cls.__name__}: it takes no classifier-free guidance, so there are no two halves "
            "to run in parallel",
        )
    return name


def check_guidance_on(pipeline_cls: type, parameter: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise ConfigError (same on every rank: same call arguments) when this call runs with guidance off."""
    signature = inspect.signature(pipeline_cls.__call__)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return  # the pipeline itself will report the bad call
    bound.apply_defaults()
    scale = bound.arguments.get(parameter)
    value = float(scale.max()) if isinstance(scale, torch.Tensor) else scale
    if isinstance(value, int | float) and value <= 1.0:
        raise ConfigError(
            parameter,
            scale,
            "> 1 on an AsyncDiff object with cfg_parallel=True: with guidance off the pipeline runs no "
            "unconditional half for the second group; call with guidance on, or wrap without cfg_parallel",
        )


def halve_batch(arguments: dict[str, Any], batch: int, half: int) -> dict[str, Any]:
    """This group's half of every batch-major tensor argument.

    A tensor whose leading dimension is a multiple of the sample's batch (``batch``: the sample itself, text
    embeddings, added conditions, timesteps expanded to the batch, ControlNet residuals, AnimateDiff's per-frame
    text embeddings of ``batch x frames`` rows) is cut in two along it; everything else is passed unchanged.
    """

    def cut(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] % batch == 0:
            size = x.shape[0] // 2
            return x[half * size : (half + 1) * size]
        return x

    return {name: pytree.tree_map(cut, value) for name, value in arguments.items()}


def check_cfg_batch(batch: int, do_cfg: Any) -> None:
    """A CFG-parallel call needs an even batch of two halves; the pipeline must be guiding."""
    if do_cfg is not None and not bool(do_cfg):
        raise ConfigError(
            "cfg_parallel",
            True,
            "False for this call: the pipeline is not guiding (do_classifier_free_guidance is False, e.g. a "
            "guidance-distilled denoiser), so there are no two halves",
        )
    if batch < 2 or batch % 2:
        raise ConfigError(
            "cfg_parallel",
            True,
            f"a denoiser batch of two halves (unconditional, conditional); this call's batch is {batch}",
        )
