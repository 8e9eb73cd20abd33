"""AsyncDiff example: AnimateDiff (an SD 1.5 UNet plus a motion adapter; rank 0 saves an animated GIF).

Why: AnimateDiff's UNetMotionModel interleaves temporal motion modules with the spatial blocks; this example
runs it under AsyncDiff (``--motion-adapter`` picks another adapter checkpoint).
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import run_example

FAMILY = "animatediff"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for a real AnimateDiff run: 16 frames of 512 x 512."""
    return {
        "prompt": args.prompt or "A panda playing a guitar on a sunny beach, high quality",
        "negative_prompt": "bad quality, worse quality",
        "num_frames": 16,
        "height": 512,
        "width": 512,
        "guidance_scale": 7.5,
    }


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
