"""Balanced split tables for the production architectures (the AsyncDiff paper's Table 1 splits).

Why: for the real model families the reference's hand-balanced tables give each device equal compute. They are
keyed here by *architecture* (block types and layer counts read from the denoiser's config), not by a hub model id,
so fine-tunes and local copies get them too. The reference's typos are fixed (x4 upscaler N=2 named the wrong
upsampler and N=4 crashed; N=3 interleaved its cut); AnimateDiff has no N=4 table and falls back to the automatic
split. Any other architecture gets the automatic cost-balanced split.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

OUT = ["conv_norm_out", "conv_out"]


def _sub(block: str, *names: str) -> list[str]:
    """Sub-unit paths of one block: _sub('up_blocks.1', 'r0', 'a0') -> resnets.0, attentions.0."""
    kinds = {"r": "resnets", "a": "attentions", "d": "downsamplers", "u": "upsamplers"}
    return [f"{block}.{kinds[n[0]]}.{n[1:]}" for n in names]


DOWN4 = [f"down_blocks.{i}" for i in range(4)]

PRESETS: dict[str, dict[int, list[list[str]]]] = {
    "sd21": {
        2: [
            [
                "conv_in",
                *DOWN4,
                "mid_block",
                "up_blocks.0",
                *_sub("up_blocks.1", "r0", "a0", "r1", "a1", "r2"),
            ],
            [*_sub("up_blocks.1", "a2", "u0"), "up_blocks.2", "up_blocks.3", *OUT],
        ],
        3: [
            ["conv_in", *DOWN4],
            ["mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2"],
            ["up_blocks.3", *OUT],
        ],
        4: [
            ["conv_in", "down_blocks.0", "down_blocks.1"],
            ["down_blocks.2", "down_blocks.3", "mid_block", "up_blocks.0", "up_blocks.1"],
            ["up_blocks.2", *_sub("up_blocks.3", "r0")],
            [*_sub("up_blocks.3", "a0", "r1", "a1", "r2", "a2"), *OUT],
        ],
    },
    "sd15": {
        2: [
            ["conv_in", *DOWN4, "mid_block", "up_blocks.0", *_sub("up_blocks.1", "r0", "a0", "r1")],
            [*_sub("up_blocks.1", "a1", "r2", "a2", "u0"), "up_blocks.2", "up_blocks.3", *OUT],
        ],
        3: [
            ["conv_in", *DOWN4],
            ["mid_block", "up_blocks.0", "up_blocks.1", *_sub("up_blocks.2", "r0", "a0", "r1", "a1", "r2")],
            [*_sub("up_blocks.2", "a2", "u0"), "up_blocks.3", *OUT],
        ],
        4: [
            ["conv_in", "down_blocks.0", "down_blocks.1"],
            [
                "down_blocks.2",
                "down_blocks.3",
                "mid_block",
                "up_blocks.0",
                *_sub("up_blocks.1", "r0", "a0", "r1"),
            ],
            [*_sub("up_blocks.1", "a1", "r2", "a2", "u0"), "up_blocks.2"],
            ["up_blocks.3", *OUT],
        ],
    },
    # SDXL is not contiguous: the expensive deep part is spread over the first components, the cheap shallow
    # head and tail sit together on the last one.
    "sdxl": {
        2: [
            ["down_blocks.2", "mid_block", *_sub("up_blocks.0", "r0", "a0", "r1", "a1")],
            [
                "conv_in",
                "down_blocks.0",
                "down_blocks.1",
                *_sub("up_blocks.0", "r2", "a2", "u0"),
                "up_blocks.1",
                "up_blocks.2",
                *OUT,
            ],
        ],
        3: [
            ["down_blocks.2", "mid_block", *_sub("up_blocks.0", "r0")],
            [*_sub("up_blocks.0", "a0", "r1", "a1", "r2", "a2", "u0")],
            ["conv_in", "down_blocks.0", "down_blocks.1", "up_blocks.1", "up_blocks.2", *OUT],
        ],
        4: [
            [*_sub("down_blocks.1", "a0", "r1", "a1", "d0"), "down_blocks.2"],
            ["mid_block", *_sub("up_blocks.0", "r0", "a0")],
            [*_sub("up_blocks.0", "r1", "a1", "r2", "a2", "u0")],
            ["conv_in", "down_blocks.0", *_sub("down_blocks.1", "r0"), "up_blocks.1", "up_blocks.2", *OUT],
        ],
    },
    "sd-upscaler": {
        2: [
            ["conv_in", *DOWN4, "mid_block", "up_blocks.0", *_sub("up_blocks.1", "r0", "a0", "r1", "a1")],
            [*_sub("up_blocks.1", "r2", "a2", "u0"), "up_blocks.2", "up_blocks.3", *OUT],
        ],
        3: [
            ["conv_in", *DOWN4],
            ["mid_block", "up_blocks.0", "up_blocks.1", *_sub("up_blocks.2", "r0", "a0", "r1")],
            [*_sub("up_blocks.2", "a1", "r2", "a2", "u0"), "up_blocks.3", *OUT],
        ],
        4: [
            ["conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2"],
            ["down_blocks.3", "mid_block", "up_blocks.0", "up_blocks.1"],
            ["up_blocks.2"],
            ["up_blocks.3", *OUT],
        ],
    },
    "svd": {
        2: [
            ["conv_in", *DOWN4, "mid_block", "up_blocks.0", "up_blocks.1"],
            ["up_blocks.2", "up_blocks.3", *OUT],
        ],
        3: [
            ["conv_in", "down_blocks.0", "down_blocks.1", "down_blocks.2"],
            ["down_blocks.3", "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2"],
            ["up_blocks.3", *OUT],
        ],
        4: [
            ["conv_in", "down_blocks.0", *_sub("down_blocks.1", "r0", "a0")],
            [
                *_sub("down_blocks.1", "r1", "a1", "d0"),
                "down_blocks.2",
                "down_blocks.3",
                "mid_block",
                "up_blocks.0",
                "up_blocks.1",
            ],
            ["up_blocks.2", *_sub("up_blocks.3", "r0", "a0")],
            [*_sub("up_blocks.3", "r1", "a1", "r2", "a2"), *OUT],
        ],
    },
    "animatediff": {
        2: [
            ["conv_in", *DOWN4, "mid_block", "up_blocks.0", "up_blocks.1"],
            ["up_blocks.2", "up_blocks.3", *OUT],
        ],
        3: [
            ["conv_in", *DOWN4],
            ["mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2"],
            ["up_blocks.3", *OUT],
        ],
    },
}

_SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SDXL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_X4_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
_SVD_DOWN = (
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "CrossAttnDownBlockSpatioTemporal",
    "DownBlockSpatioTemporal",
)


def _cfg(denoiser: nn.Module, key: str, default: Any = None) -> Any:
    config = getattr(denoiser, "config", None)
    return getattr(config, key, default) if config is not None else default


def architecture_key(denoiser: nn.Module) -> str | None:
    """Name of the production architecture this denoiser has, or None (then the automatic split is used)."""
    cls = type(denoiser).__name__
    down = tuple(_cfg(denoiser, "down_block_types", ()) or ())
    lpb = _cfg(denoiser, "layers_per_block")
    if lpb != 2 and cls != "SD3Transformer2DModel":
        return None
    if cls == "UNet2DConditionModel":
        if down == _SD_DOWN and _cfg(denoiser, "in_channels") == 4:
            return "sd21" if _cfg(denoiser, "use_linear_projection") else "sd15"
        if down == _SDXL_DOWN and _cfg(denoiser, "addition_embed_type") == "text_time":
            return "sdxl"
        if down == _X4_DOWN and _cfg(denoiser, "in_channels") == 7:
            return "sd-upscaler"
    if cls == "UNetSpatioTemporalConditionModel" and down == _SVD_DOWN:
        return "svd"
    if cls == "UNetMotionModel" and len(down) == 4:
        return "animatediff"
    return None


def preset_components(denoiser: nn.Module, model_n: int) -> tuple[str, list[list[str]]] | None:
    """(preset name, components) for this architecture and model_n, or None when no table applies."""
    key = architecture_key(denoiser)
    if key is not None and model_n in PRESETS[key]:
        return key, [list(c) for c in PRESETS[key][model_n]]
    if type(denoiser).__name__ == "SD3Transformer2DModel":
        blocks = len(denoiser.transformer_blocks)
        if blocks % model_n == 0:
            size = blocks // model_n
            comps = [[f"transformer_blocks.{i}" for i in range(c * size, (c + 1) * size)] for c in range(model_n)]
            comps[-1] += ["norm_out", "proj_out"]
            return "sd3-equal-slices", comps
    return None
