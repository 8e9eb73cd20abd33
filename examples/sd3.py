"""AsyncDiff example: Stable Diffusion 3 (a 24-block MMDiT transformer, split into equal block slices).

Why: SD3's denoiser is a transformer, not a UNet: this example exercises the transformer path (keyword-only
denoiser call, flow-matching scheduler) under AsyncDiff, e.g. ``--model-n 2 --stride 1 --warm-up 1``.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sd3"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real SD3 medium checkpoint (1024 x 1024, 28 steps by default)."""
    kwargs: dict[str, Any] = {
        "prompt": args.prompt or "A cat holding a sign that says hello world",
        "negative_prompt": "",
        "guidance_scale": 7.0,
    }
    if args.img2img:
        return kwargs | {"image": input_image(args, 1024), "strength": 0.6}
    return kwargs | {"height": 1024, "width": 1024}


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
