"""AsyncDiff example: Stable Diffusion 1.5, text-to-image (or image-to-image with --img2img).

Why: shows the two-line AsyncDiff wrap on the SD 1.5 family and gives a launchable latency check, e.g.
``torchrun --nproc_per_node=2 examples/sd15.py --tiny --model-n 2 --stride 1 --warm-up 1``.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sd15"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real SD 1.5 checkpoint (512 x 512)."""
    kwargs: dict[str, Any] = {
        "prompt": args.prompt or "Beautiful illustration of the fairy, digital art",
        "negative_prompt": "blurry, low quality",
        "guidance_scale": 7.5,
    }
    if args.img2img:
        return kwargs | {"image": input_image(args, 512), "strength": 0.6}
    return kwargs | {"height": 512, "width": 512}


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
