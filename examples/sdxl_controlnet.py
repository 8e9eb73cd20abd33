"""AsyncDiff example: SDXL with a ControlNet (canny by default, loaded from its own checkpoint).

Why: the ControlNet runs on every rank as glue and its residuals are added inside the split UNet, so this
example checks that path end to end (``--controlnet`` picks another ControlNet).
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "sdxl-controlnet"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for SDXL + ControlNet (1024 x 1024; --image is the control image, else a generated edge map)."""
    return {
        "prompt": args.prompt or "aerial view, a futuristic research complex in a bright foggy jungle",
        "negative_prompt": "low quality, bad quality, sketches",
        "image": input_image(args, 1024, "edges"),
        "height": 1024,
        "width": 1024,
        "controlnet_conditioning_scale": 0.5,
        "guidance_scale": 5.0,
    }


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
