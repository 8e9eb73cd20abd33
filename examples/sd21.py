"""AsyncDiff example: Stable Diffusion 2.1, text-to-image (or image-to-image with --img2img).

Why: SD 2.1 is the paper's main benchmark model; this runs it (or a tiny stand-in with --tiny) under
AsyncDiff, e.g. ``torchrun --nproc_per_node=4 examples/sd21.py --model-n 3 --stride 2 --warm-up 9``.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sd21"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real SD 2.1 checkpoint (768 x 768, v-prediction)."""
    kwargs: dict[str, Any] = {
        "prompt": args.prompt or "A kitten that is sitting down by a door",
        "negative_prompt": "blurry, low quality",
        "guidance_scale": 7.5,
    }
    if args.img2img:
        return kwargs | {"image": input_image(args, 768), "strength": 0.6}
    return kwargs | {"height": 768, "width": 768}


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
