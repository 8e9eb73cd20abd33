"""AsyncDiff example: the Stable Diffusion x4 upscaler (a low-resolution image in, a 4x larger one out).

Why: the upscaler's UNet takes the low-resolution image as extra input channels and a noise level as class
label; this example runs that conditioning path under AsyncDiff.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sd-upscaler"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for the real x4 upscaler: a 128 x 128 image (--image, or a pattern) becomes 512 x 512."""
    return {
        "prompt": args.prompt or "a white cat",
        "negative_prompt": "blurry",
        "image": input_image(args, 128),
        "guidance_scale": 9.0,
        "noise_level": 20,
    }


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
