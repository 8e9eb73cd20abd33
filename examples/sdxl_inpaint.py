"""AsyncDiff example: SDXL inpainting (image + mask; the UNet takes 9 input channels).

Why: inpainting concatenates the masked image latents to the UNet input and starts from a partly noised image,
which exercises AsyncDiff's step tracking on a strength-dependent schedule.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sdxl-inpaint"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real SDXL inpainting checkpoint (1024 x 1024; --image / --mask or generated patterns)."""
    return {
        "prompt": args.prompt or "A tiger sitting on a park bench",
        "negative_prompt": "blurry, low quality",
        "image": input_image(args, 1024),
        "mask_image": input_image(args, 1024, "mask"),
        "height": 1024,
        "width": 1024,
        "guidance_scale": 8.0,
        "strength": 0.99,
    }


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
