"""Random-weight, compute-bound SD-architecture pipelines for the speed, traffic and memory benchmarks.

Why: speedups measured on tiny models show overheads, not parallelism. The CPU probe (shared/notes/ml-stack.md,
section 4) picked an SD 2.1-layout UNet with (128, 256, 512, 512) channels ("L", 137M parameters, ~1 s per step at
256x256 on one thread) as the compute-bound point and (64, 128, 256, 256) ("M", 34M) for quick runs. The VAE is
tiny (so the UNet dominates the generation, as on real GPUs), the text encoder is a small random CLIP of the UNet's
cross-attention width. The real ``StableDiffusionPipeline`` runs them, so AsyncDiff wraps exactly what users wrap.
Checkpoints are hundreds of MB: they are built on demand into bench/.cache/ (ignored by git), never committed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

CACHE = Path(__file__).resolve().parent / ".cache"

SCALES: dict[str, dict[str, Any]] = {
    "S": {"block_out_channels": (32, 64, 64, 64), "cross_attention_dim": 64},
    "M": {"block_out_channels": (64, 128, 256, 256), "cross_attention_dim": 128},
    "L": {"block_out_channels": (128, 256, 512, 512), "cross_attention_dim": 256},
}
SIZE = 256
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry, low quality"


def unet_config(scale: str) -> dict[str, Any]:
    """SD 2.1 block layout (3 x CrossAttnDown + Down, lpb 2, linear projection): the 'sd21' preset applies."""
    s = SCALES[scale]
    return {
        "sample_size": SIZE // 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": s["block_out_channels"],
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": s["cross_attention_dim"],
        "attention_head_dim": 8,
        "use_linear_projection": True,
        "norm_num_groups": 32,
    }


def build_components(scale: str, seed: int = 0) -> dict[str, Any]:
    from asyncdiff.testing.tiny_pipelines import _clip_tokenizer, sd_ddim_scheduler, tiny_clip_text_config
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    cross = SCALES[scale]["cross_attention_dim"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config(scale)).eval()
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=SIZE,
        ).eval()
        text_encoder = CLIPTextModel(tiny_clip_text_config(cross, intermediate_size=2 * cross)).eval()
    scheduler = sd_ddim_scheduler()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": _clip_tokenizer(),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def ensure_scale_pipeline(scale: str) -> Path:
    """Build and save the ``scale`` pipeline into bench/.cache/ once; return its folder."""
    from diffusers import StableDiffusionPipeline

    out = CACHE / f"sd21-{scale}"
    marker = out / "bench-config.json"
    wanted = json.dumps({"unet": unet_config(scale), "version": 1}, sort_keys=True, default=list)
    if marker.is_file() and marker.read_text() == wanted:
        return out
    pipe = StableDiffusionPipeline(**build_components(scale))
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out))
    marker.write_text(wanted)
    return out


def load_scale_pipeline(path: Path | str) -> Any:
    from asyncdiff.loading import load_pipeline

    return load_pipeline("sd21", path)


def call_kwargs(steps: int, seed: int = 0) -> dict[str, Any]:
    return {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "num_inference_steps": steps,
        "guidance_scale": 7.5,
        "height": SIZE,
        "width": SIZE,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
    }
