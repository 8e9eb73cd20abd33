"""AsyncDiff example: Stable Diffusion XL base, text-to-image (or image-to-image with --img2img).

Why: SDXL's split preset is not contiguous (deep blocks first, shallow head and tail together), so this
example is the quickest way to see that plan (rank 0 prints it) and its latency.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sdxl"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real SDXL checkpoint (1024 x 1024)."""
    kwargs: dict[str, Any] = {
        "prompt": args.prompt or "An astronaut riding a green horse",
        "negative_prompt": "blurry, low quality",
        "guidance_scale": 5.0,
    }
    if args.img2img:
        return kwargs | {"image": input_image(args, 1024), "strength": 0.6}
    return kwargs | {"height": 1024, "width": 1024}


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
