"""Tiny random-weight diffusers pipelines for every supported family, built offline from configs.

Why: tests, examples and benchmarks need real diffusers pipelines (real classes, real call paths, real
``save_pretrained`` / ``from_pretrained`` folders), but no checkpoint can be downloaded here and real models
are far too slow on CPU. Two layouts exist because they test different things:

* ``"minimal"``: the smallest configs that run (2 down/up levels), for fast end-to-end checks;
* ``"real"``: tiny channel counts but the block layout of the production model, so that preset split tables
  (``unet.up_blocks[1].resnets[2]``, SDXL ``up_blocks[0].attentions[2]``, SD3 ``transformer_blocks[23]`` ...)
  resolve on them.

Weights are deterministic: ``torch.manual_seed(seed)`` runs before each component is built (in a forked random
state, so building leaves the caller's random draws alone).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asyncdiff.errors import ConfigError
from asyncdiff.families import FAMILIES
from asyncdiff.loading import family_for, pipeline_class_for

__all__ = [
    "FAMILY_NAMES",
    "LAYOUTS",
    "build_tiny_components",
    "build_tiny_pipeline",
    "example_call_kwargs",
    "expected_output_shape",
    "output_array",
    "pattern_image",
    "pipeline_class_for",
]

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
LAYOUTS: tuple[str, ...] = ("minimal", "real")

SIZE = 32
"""Default output height/width in pixels of the example calls (upscaler: input size 16, output 64)."""
UPSCALER_INPUT = 16
FRAMES = 2
"""Frames per video in the example calls (SVD, AnimateDiff)."""
TEXT_DIM = 32
"""Hidden size (and projection size) of every tiny CLIP text encoder."""
T5_DIM = 64

_SD_LEVELS_REAL = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD_UP_REAL = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


# ------------------------------------------------------------------------------------------------------------
# Shared components: tokenizers, text/image encoders, VAEs.


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    """Build one component right after seeding torch, so each component's weights depend on the seed only.

    The caller's random state is restored afterwards: building a model must not change later random draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable unicode table (transformers v5 no longer exports it from its CLIP module)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def _clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer with no merges (514 tokens), built from Python objects, no files needed."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: i + 2 for i, c in enumerate(chars)})
    vocab.update({c + "</w>": len(chars) + 2 + i for i, c in enumerate(chars)})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer() -> Any:
    """A 192-token Unigram T5 tokenizer over printable characters (no sentencepiece needed)."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for c in string.printable.strip():
        pieces += [(c, -5.0), ("▁" + c, -4.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=256)


def tiny_clip_text_config(
    hidden_size: int, *, intermediate_size: int = 64, num_hidden_layers: int = 2, **extra: Any
) -> Any:
    """A small CLIP text config whose vocabulary and special-token ids match :func:`_clip_tokenizer`'s; shared with
    the benchmark models so the two never drift apart."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_attention_heads=4,
        num_hidden_layers=num_hidden_layers,
        vocab_size=1000,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **extra,
    )


def _clip_text_encoder(seed: int, with_projection: bool) -> Any:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = tiny_clip_text_config(TEXT_DIM, projection_dim=TEXT_DIM, hidden_act="gelu")
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return _seeded(seed, lambda: cls(config).eval())


def _t5_encoder(seed: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=256, d_model=T5_DIM, d_kv=8, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    return _seeded(seed, lambda: T5EncoderModel(config).eval())


def _vae(seed: int, levels: int = 2, **overrides: Any) -> Any:
    """An AutoencoderKL with ``levels`` blocks, i.e. a spatial scale of 2**(levels-1)."""
    from diffusers import AutoencoderKL

    channels = (16, 32, 32, 32)[:levels]
    config: dict[str, Any] = {
        "block_out_channels": channels,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": SIZE,
    }
    config.update(overrides)
    return _seeded(seed, lambda: AutoencoderKL(**config).eval())


# ------------------------------------------------------------------------------------------------------------
# Denoisers.


def _sd_unet_config(layout: str, linear_projection: bool) -> dict[str, Any]:
    """UNet2DConditionModel config of SD 1.5 (``linear_projection`` False) or SD 2.1 (True)."""
    common: dict[str, Any] = {
        "sample_size": SIZE // 2,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "cross_attention_dim": TEXT_DIM,
        "norm_num_groups": 8,
        "use_linear_projection": linear_projection,
    }
    if layout == "minimal":
        return common | {
            "block_out_channels": (16, 32),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": 2,
        }
    return common | {
        "block_out_channels": (16, 16, 32, 32),
        "down_block_types": _SD_LEVELS_REAL,
        "up_block_types": _SD_UP_REAL,
        "attention_head_dim": (2, 2, 4, 4) if linear_projection else 2,
    }


def _sdxl_unet_config(layout: str, in_channels: int = 4) -> dict[str, Any]:
    """SDXL UNet config: ``text_time`` added conditioning; real layout Down + 2 x CrossAttnDown, lpb 2."""
    time_dim = 8
    common: dict[str, Any] = {
        "sample_size": SIZE // 2,
        "in_channels": in_channels,
        "out_channels": 4,
        "layers_per_block": 2,
        "cross_attention_dim": 2 * TEXT_DIM,
        "norm_num_groups": 8,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": 6 * time_dim + TEXT_DIM,
    }
    if layout == "minimal":
        return common | {
            "block_out_channels": (16, 32),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "attention_head_dim": (2, 4),
            "transformer_layers_per_block": (1, 2),
        }
    return common | {
        "block_out_channels": (16, 32, 32),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4, 4),
        "transformer_layers_per_block": (1, 1, 2),
    }


def _unet(seed: int, config: dict[str, Any]) -> Any:
    from diffusers import UNet2DConditionModel

    return _seeded(seed, lambda: UNet2DConditionModel(**config).eval())


# ------------------------------------------------------------------------------------------------------------
# Families: each returns the keyword arguments of its pipeline class's constructor.


def sd_ddim_scheduler(prediction_type: str = "epsilon") -> Any:
    """The Stable Diffusion DDIM schedule (scaled-linear betas), shared with the benchmark models."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _sd(layout: str, seed: int, linear_projection: bool) -> dict[str, Any]:
    scheduler = sd_ddim_scheduler("v_prediction" if linear_projection else "epsilon")
    return {
        "unet": _unet(seed, _sd_unet_config(layout, linear_projection)),
        "vae": _vae(seed),
        "text_encoder": _clip_text_encoder(seed, with_projection=False),
        "tokenizer": _clip_tokenizer(),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def _sd15(layout: str, seed: int) -> dict[str, Any]:
    return _sd(layout, seed, linear_projection=False)


def _sd21(layout: str, seed: int) -> dict[str, Any]:
    return _sd(layout, seed, linear_projection=True)


def _euler_sdxl() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def _sdxl_common(seed: int, unet_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "unet": _unet(seed, unet_config),
        "vae": _vae(seed),
        "text_encoder": _clip_text_encoder(seed, with_projection=False),
        "text_encoder_2": _clip_text_encoder(seed, with_projection=True),
        "tokenizer": _clip_tokenizer(),
        "tokenizer_2": _clip_tokenizer(),
        "scheduler": _euler_sdxl(),
    }


def _sdxl(layout: str, seed: int) -> dict[str, Any]:
    return _sdxl_common(seed, _sdxl_unet_config(layout))


def _sdxl_inpaint(layout: str, seed: int) -> dict[str, Any]:
    return _sdxl_common(seed, _sdxl_unet_config(layout, in_channels=9)) | {"requires_aesthetics_score": False}


def _sdxl_controlnet(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import ControlNetModel

    unet_config = _sdxl_unet_config(layout)
    keys = (
        "in_channels",
        "block_out_channels",
        "down_block_types",
        "layers_per_block",
        "cross_attention_dim",
        "norm_num_groups",
        "use_linear_projection",
        "addition_embed_type",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
        "attention_head_dim",
        "transformer_layers_per_block",
    )
    cn_config = {k: unet_config[k] for k in keys}
    # One downsample in the conditioning embedding: the tiny VAE's scale is 2.
    cn_config["conditioning_embedding_out_channels"] = (8, 16)
    controlnet = _seeded(seed, lambda: _unzero_controlnet(ControlNetModel(**cn_config).eval()))
    return _sdxl_common(seed, unet_config) | {"controlnet": controlnet}


def _unzero_controlnet(controlnet: Any) -> Any:
    """Give the zero-initialised output convolutions small random weights.

    A fresh ControlNet's residuals are exactly zero, so a runtime that dropped or misrouted them would still
    match the sequential output; with random weights the residuals change the image.
    """
    zero_modules = [
        controlnet.controlnet_cond_embedding.conv_out,
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
    ]
    with torch.no_grad():
        for module in zero_modules:
            for param in module.parameters():
                param.normal_(0.0, 0.05)
    return controlnet


def _sd3(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    real = layout == "real"
    transformer_config: dict[str, Any] = {
        "sample_size": SIZE // 2,
        "patch_size": 2 if real else 1,
        "in_channels": 4,
        "out_channels": 4,
        "num_layers": 24 if real else 2,
        "attention_head_dim": 8,
        "num_attention_heads": 2 if real else 4,
        "caption_projection_dim": 16 if real else 32,
        "joint_attention_dim": T5_DIM,
        "pooled_projection_dim": 2 * TEXT_DIM,
        "pos_embed_max_size": SIZE,
    }
    vae_overrides: dict[str, Any] = {
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "shift_factor": 0.0609,
        "scaling_factor": 1.5035,
    }
    return {
        "transformer": _seeded(seed, lambda: SD3Transformer2DModel(**transformer_config).eval()),
        "vae": _vae(seed, **vae_overrides),
        "text_encoder": _clip_text_encoder(seed, with_projection=True),
        "text_encoder_2": _clip_text_encoder(seed, with_projection=True),
        "text_encoder_3": _t5_encoder(seed),
        "tokenizer": _clip_tokenizer(),
        "tokenizer_2": _clip_tokenizer(),
        "tokenizer_3": _t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def _upscaler(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import DDIMScheduler, DDPMScheduler

    unet_config: dict[str, Any] = {
        "sample_size": UPSCALER_INPUT,
        "in_channels": 7,
        "out_channels": 4,
        "layers_per_block": 2,
        "cross_attention_dim": TEXT_DIM,
        "norm_num_groups": 8,
        "use_linear_projection": True,
        "num_class_embeds": 100,
        "attention_head_dim": 2,
    }
    if layout == "minimal":
        unet_config |= {
            "block_out_channels": (16, 32),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "only_cross_attention": (True, False),
        }
    else:
        unet_config |= {
            "block_out_channels": (16, 16, 32, 32),
            "down_block_types": (
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
            ),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "only_cross_attention": (True, True, True, False),
        }
    return {
        "unet": _unet(seed, unet_config),
        "vae": _vae(seed, levels=3, scaling_factor=0.08333),
        "text_encoder": _clip_text_encoder(seed, with_projection=False),
        "tokenizer": _clip_tokenizer(),
        "low_res_scheduler": DDPMScheduler(),
        "scheduler": DDIMScheduler(prediction_type="v_prediction", steps_offset=1),
        "safety_checker": None,
        "feature_extractor": None,
        "watermarker": None,
        "max_noise_level": 350,
    }


def _svd(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    time_dim = 8
    unet_config: dict[str, Any] = {
        "sample_size": SIZE // 2,
        "in_channels": 8,
        "out_channels": 4,
        "layers_per_block": 2,
        "cross_attention_dim": TEXT_DIM,
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": 3 * time_dim,
        "num_frames": FRAMES,
    }
    if layout == "minimal":
        unet_config |= {
            "block_out_channels": (32, 32),
            "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            "num_attention_heads": 4,
        }
    else:
        unet_config |= {
            "block_out_channels": (32, 32, 32, 32),
            "down_block_types": ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
            "up_block_types": ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
            "num_attention_heads": 4,
        }
    vision = CLIPVisionConfig(
        hidden_size=TEXT_DIM,
        projection_dim=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=224,
        patch_size=32,
    )
    vae_config: dict[str, Any] = {  # GroupNorm(32) is built in: channels must be multiples of 32
        "block_out_channels": (32, 32),
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "latent_channels": 4,
        "layers_per_block": 1,
    }
    return {
        "unet": _seeded(seed, lambda: UNetSpatioTemporalConditionModel(**unet_config).eval()),
        "vae": _seeded(seed, lambda: AutoencoderKLTemporalDecoder(**vae_config).eval()),
        "image_encoder": _seeded(seed, lambda: CLIPVisionModelWithProjection(vision).eval()),
        "feature_extractor": CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            interpolation_type="linear",
            prediction_type="v_prediction",
            sigma_max=700.0,
            sigma_min=0.002,
            steps_offset=1,
            timestep_spacing="leading",
            timestep_type="continuous",
            use_karras_sigmas=True,
        ),
    }


def _animatediff(layout: str, seed: int) -> dict[str, Any]:
    from diffusers import DDIMScheduler, MotionAdapter

    unet_config = _sd_unet_config(layout, linear_projection=False)
    if layout == "minimal":
        unet_config |= {
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        }
    adapter = _seeded(
        seed,
        lambda: MotionAdapter(
            block_out_channels=unet_config["block_out_channels"],
            motion_layers_per_block=2,
            motion_norm_num_groups=8,
            motion_num_attention_heads=2,
            motion_max_seq_length=32,
        ).eval(),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="linspace",
    )
    return {
        "unet": _unet(seed, unet_config),
        "motion_adapter": adapter,
        "vae": _vae(seed),
        "text_encoder": _clip_text_encoder(seed, with_projection=False),
        "tokenizer": _clip_tokenizer(),
        "scheduler": scheduler,
        "feature_extractor": None,
        "image_encoder": None,
    }


_BUILDERS: dict[str, Callable[[str, int], dict[str, Any]]] = {
    "sd15": _sd15,
    "sd21": _sd21,
    "sdxl": _sdxl,
    "sdxl-inpaint": _sdxl_inpaint,
    "sdxl-controlnet": _sdxl_controlnet,
    "sd3": _sd3,
    "sd-upscaler": _upscaler,
    "svd": _svd,
    "animatediff": _animatediff,
}


# ------------------------------------------------------------------------------------------------------------
# Public API.


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError("layout", layout, "one of " + ", ".join(LAYOUTS))


def build_tiny_components(family: str, layout: str = "minimal", seed: int = 0) -> dict[str, Any]:
    """Constructor keyword arguments of ``family``'s (text-to-X) pipeline class, with tiny random weights."""
    family_for(family)
    _check_layout(layout)
    return _BUILDERS[family](layout, seed)


def build_tiny_pipeline(family: str, out_dir: str | Path, layout: str = "minimal", seed: int = 0) -> Path:
    """Build the tiny ``family`` pipeline and ``save_pretrained`` it (all components) into ``out_dir``."""
    components = build_tiny_components(family, layout, seed)
    pipe = pipeline_class_for(family)(**components)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out))
    return out


def pattern_image(size: int | tuple[int, int], kind: str = "rgb") -> Any:
    """A deterministic PIL image (gradients and a checkerboard), ``kind`` "rgb", "mask" or "edges"."""
    from PIL import Image

    width, height = (size, size) if isinstance(size, int) else size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "mask":  # white (repaint) square in the middle
        inside = (abs(x - width / 2) < width / 4) & (abs(y - height / 2) < height / 4)
        return Image.fromarray((inside * 255).astype(np.uint8)).convert("RGB")
    checker = ((x // 4 + y // 4) % 2).astype(np.float32)
    if kind == "edges":
        edges = (checker != np.roll(checker, 1, axis=1)) | (checker != np.roll(checker, 1, axis=0))
        gray = (edges * 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1))
    red = x / max(width - 1, 1)
    green = y / max(height - 1, 1)
    blue = 0.25 + 0.5 * checker
    rgb = np.stack([red, green, blue], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def _check_img2img(family: str, img2img: bool) -> None:
    if img2img and len(family_for(family).pipeline_classes) < 2:
        raise ConfigError("img2img", img2img, f"family {family!r} has no image-to-image pipeline")


def _family_inputs(family: str, img2img: bool) -> dict[str, Any]:
    """The per-family inputs besides prompt, steps, generator, guidance and output type."""
    text_length = {"max_sequence_length": 32} if family == "sd3" else {}
    if img2img:  # the img2img pipelines take their size from the image
        return text_length | {"image": pattern_image(SIZE), "strength": 0.6}
    size = {"height": SIZE, "width": SIZE}
    if family == "sd3":
        return size | text_length
    if family == "sdxl-inpaint":
        return size | {
            "image": pattern_image(SIZE),
            "mask_image": pattern_image(SIZE, "mask"),
            "strength": 1.0,
        }
    if family == "sdxl-controlnet":
        return size | {"image": pattern_image(SIZE, "edges")}
    if family == "sd-upscaler":
        return {"image": pattern_image(UPSCALER_INPUT), "noise_level": 20}
    if family == "svd":
        return size | {
            "image": pattern_image(SIZE),
            "num_frames": FRAMES,
            "decode_chunk_size": FRAMES,
            "min_guidance_scale": 1.0,
            "max_guidance_scale": 3.0,
        }
    if family == "animatediff":
        return size | {"num_frames": FRAMES}
    return size


def example_call_kwargs(family: str, *, steps: int = 4, seed: int = 0, img2img: bool = False) -> dict[str, Any]:
    """Keyword arguments to call the loaded tiny ``family`` pipeline: small, CFG on, numpy output."""
    _check_img2img(family, img2img)
    kwargs: dict[str, Any] = {
        "num_inference_steps": steps,
        "generator": torch.Generator("cpu").manual_seed(seed),
        "output_type": "np",
    }
    if family != "svd":  # SVD is image-conditioned: no prompt; its guidance runs min..max over the frames
        kwargs |= {"prompt": "a red cube on a blue table", "negative_prompt": "blurry", "guidance_scale": 5.0}
    return kwargs | _family_inputs(family, img2img)


def expected_output_shape(family: str, img2img: bool = False) -> tuple[int, ...]:
    """Shape of ``output_array`` for ``example_call_kwargs(family, img2img=...)``: (1, [frames,] H, W, 3)."""
    _check_img2img(family, img2img)
    side = UPSCALER_INPUT * 4 if family == "sd-upscaler" else SIZE
    if family_for(family).video:
        return (1, FRAMES, side, side, 3)
    return (1, side, side, 3)


def output_array(result: Any) -> np.ndarray:
    """The images (``.images``) or video frames (``.frames``) of a pipeline result as one numpy array."""
    data = result.frames if hasattr(result, "frames") else result.images
    if isinstance(data, torch.Tensor):
        data = data.float().cpu().numpy()
    return np.asarray(data)
