"""AsyncDiff example: Stable Video Diffusion (image-to-video; rank 0 saves an animated GIF).

Why: SVD's spatio-temporal UNet works on (batch, frames, channels, height, width) latents with per-frame
guidance; this example runs it under AsyncDiff, e.g. ``--model-n 2 --stride 1 --warm-up 1``.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import input_image, run_example

FAMILY = "svd"


def real_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """Inputs for SVD img2vid-xt: a 1024 x 576 conditioning image (--image, or a generated pattern)."""
    return {
        "image": input_image(args, (1024, 576)),
        "height": 576,
        "width": 1024,
        "decode_chunk_size": 8,
        "motion_bucket_id": 127,
        "noise_aug_strength": 0.02,
    }


if __name__ == "__main__":
    run_example(FAMILY, real_inputs)
