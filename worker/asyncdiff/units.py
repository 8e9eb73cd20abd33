"""The splittable units of a denoiser, in execution order.

Why: a split plan is a partition of these units. Units are named by module path (``up_blocks.1.resnets.2``), so
splits are keyed by architecture and block path, never by a model id: fine-tunes and local folders work. A whole
block (``down_blocks.0``) may stand for all of its sub-units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from asyncdiff.errors import ConfigError

_SUB_UNIT_LISTS = ("resnets", "attentions", "motion_modules")
_SAMPLERS = ("downsamplers", "upsamplers")


@dataclass(frozen=True)
class UnitLayout:
    """The atomic units of one denoiser and the units that always sit with the last component."""

    kind: str
    """'unet' (down/mid/up blocks) or 'transformer' (a stack of transformer blocks)."""
    atomic: tuple[str, ...]
    """Finest-grained units in static execution order."""
    tail: tuple[str, ...] = ()
    """Units pinned to the last component (SD3's norm_out and proj_out)."""

    @property
    def splittable(self) -> tuple[str, ...]:
        return tuple(u for u in self.atomic if u not in self.tail)


def _block_units(prefix: str, block: nn.Module) -> list[str]:
    """Sub-units of a down/up block in the order its forward runs them (resnet, attention, motion per layer)."""
    lists = [
        (name, getattr(block, name))
        for name in _SUB_UNIT_LISTS
        if isinstance(getattr(block, name, None), nn.ModuleList)
    ]
    if not lists:
        return [prefix]
    layers = max(len(mods) for _, mods in lists)
    units = [f"{prefix}.{name}.{j}" for j in range(layers) for name, mods in lists if j < len(mods)]
    for name in _SAMPLERS:
        samplers = getattr(block, name, None)
        if isinstance(samplers, nn.ModuleList):
            units += [f"{prefix}.{name}.{j}" for j in range(len(samplers))]
    return units


def unit_layout(denoiser: nn.Module) -> UnitLayout:
    """Enumerate the units of a supported denoiser (UNet-style or transformer-style)."""
    if isinstance(getattr(denoiser, "down_blocks", None), nn.ModuleList) and isinstance(
        getattr(denoiser, "up_blocks", None), nn.ModuleList
    ):
        units: list[str] = ["conv_in"]
        for i, block in enumerate(denoiser.down_blocks):
            units += _block_units(f"down_blocks.{i}", block)
        if getattr(denoiser, "mid_block", None) is not None:
            units.append("mid_block")
        for i, block in enumerate(denoiser.up_blocks):
            units += _block_units(f"up_blocks.{i}", block)
        units += [name for name in ("conv_norm_out", "conv_out") if getattr(denoiser, name, None) is not None]
        return UnitLayout("unet", tuple(units))
    blocks = getattr(denoiser, "transformer_blocks", None)
    if isinstance(blocks, nn.ModuleList):
        tail = tuple(name for name in ("norm_out", "proj_out") if getattr(denoiser, name, None) is not None)
        atomic = tuple(f"transformer_blocks.{i}" for i in range(len(blocks))) + tail
        return UnitLayout("transformer", atomic, tail)
    raise ConfigError(
        "pipeline",
        type(denoiser).__name__,
        "a denoiser with down_blocks/up_blocks (UNet) or transformer_blocks (SD3) is required",
    )


def covered_atomic(path: str, atomic: tuple[str, ...]) -> list[str]:
    """The atomic units a plan entry stands for: itself, or every atomic unit below a block path."""
    if path in atomic:
        return [path]
    return [u for u in atomic if u.startswith(path + ".")]
