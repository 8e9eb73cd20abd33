"""A tiny *trained* text-conditioned diffusion model (scikit-learn digits, 16x16) inside a real StableDiffusionPipeline.

Why: AsyncDiff's premise is that a block's hidden states change little between adjacent denoising steps. That holds
for trained models only, so output fidelity (PSNR/SSIM/classifier accuracy of async against sequential outputs) is
meaningless on random weights. No trained diffusion checkpoint can be downloaded here, so we train one: the digits
ship offline inside scikit-learn, and a ~1M-parameter label-conditioned UNet learns them in ~1500 steps on one thread.

The choice (documented in SUMMARY.md): the UNet is a stock ``UNet2DConditionModel`` whose ``encoder_hidden_states``
is a 1-token label embedding (index 10 = the null label, dropped 10% of the time in training, for classifier-free
guidance). It runs inside a real, supported ``StableDiffusionPipeline`` driven through the pipeline's own
``prompt_embeds`` / ``negative_prompt_embeds`` arguments (so the label embedding replaces the text encoder, which is
a tiny random CLIP that the call never runs). The model is pixel-space (1 channel, 16x16): the pipeline's VAE has one
block (scale factor 1) and the call uses ``output_type="latent"``, so the pipeline returns the denoised pixels without
a VAE decode. Everything AsyncDiff touches (the pipeline class, its denoising loop, CFG batching, the DDIM scheduler,
the UNet's blocks) is the real thing.

``python -m bench.digits train`` trains when the weights are absent (``--force`` retrains); the weights are committed
under ``bench/assets/`` so later runs skip training.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
UNET_DIR = ASSETS / "digits_unet"
EMBED_FILE = ASSETS / "digits_label_embedding.safetensors"
META_FILE = ASSETS / "digits_train.json"

SIDE = 16
NULL_LABEL = 10
EMBED_DIM = 32
TRAIN_STEPS = 1500
BATCH = 32
GUIDANCE = 3.0
STEPS = 20

UNET_CONFIG: dict[str, Any] = {
    "sample_size": SIDE,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": EMBED_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "use_linear_projection": True,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


def load_digits_16() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits, bilinearly upsampled to 16x16, in [-1, 1]: (N, 1, 16, 16) float32 and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).numpy(), data.target.astype(np.int64)


def trained() -> bool:
    return (UNET_DIR / "config.json").is_file() and EMBED_FILE.is_file()


def train(
    steps: int = TRAIN_STEPS, seed: int = 0, log_every: int = 100, resume: bool = False, lr: float = 1e-3
) -> dict[str, Any]:
    """Train the label-conditioned UNet (DDPM epsilon loss, AdamW) and save it under bench/assets/.

    ``resume`` continues from the saved weights (``seed`` should differ from the first run's) and keeps an
    exponential moving average of the weights (decay 0.995), which is what gets saved: it removes most of the
    residual pixel noise a short run leaves in the samples.
    """
    import copy

    from diffusers import DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    x_all, y_all = load_digits_16()
    x_t, y_t = torch.from_numpy(x_all), torch.from_numpy(y_all)
    previous: dict[str, Any] = {}
    if resume:
        unet = UNet2DConditionModel.from_pretrained(str(UNET_DIR))
        embed = torch.nn.Embedding(NULL_LABEL + 1, EMBED_DIM)
        with torch.no_grad():
            embed.weight.copy_(label_embedding())
        previous = json.loads(META_FILE.read_text()) if META_FILE.is_file() else {}
    else:
        unet = UNet2DConditionModel(**UNET_CONFIG)
        embed = torch.nn.Embedding(NULL_LABEL + 1, EMBED_DIM)
    ema = (copy.deepcopy(unet), copy.deepcopy(embed)) if resume else None
    noise_sched = DDPMScheduler(**SCHEDULER_CONFIG)
    params = list(unet.parameters()) + list(embed.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    warm = 100
    lr_at = lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    start, losses = time.perf_counter(), []
    unet.train()
    for step in range(steps):
        idx = torch.randint(0, len(x_t), (BATCH,), generator=gen)
        x0, y = x_t[idx], y_t[idx].clone()
        y[torch.rand(BATCH, generator=gen) < 0.1] = NULL_LABEL
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (BATCH,), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=embed(y).unsqueeze(1)).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for mod, avg in zip((unet, embed), ema, strict=True):
                    for p_avg, p in zip(avg.parameters(), mod.parameters(), strict=True):
                        p_avg.lerp_(p, 0.005)
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"step {step + 1}/{steps} loss {recent:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    if ema is not None:
        unet, embed = ema
    unet.eval()
    ASSETS.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(str(UNET_DIR))
    save_file({"weight": embed.weight.detach().contiguous()}, str(EMBED_FILE))
    meta = {
        "steps": steps + int(previous.get("steps", 0)),
        "batch": BATCH,
        "seconds": round(time.perf_counter() - start + float(previous.get("seconds", 0)), 1),
        "runs": [
            *previous.get("runs", [{k: previous[k] for k in ("steps", "seconds") if k in previous}]),
            {
                "steps": steps,
                "lr": lr,
                "resume": resume,
                "ema": resume,
                "seed": seed,
                "seconds": round(time.perf_counter() - start, 1),
            },
        ]
        if previous
        else [{"steps": steps, "lr": lr, "resume": resume, "ema": False, "seed": seed}],
        "threads": torch.get_num_threads(),
        "final_loss_mean_last_100": sum(losses[-100:]) / min(100, len(losses)),
        "params": sum(p.numel() for p in unet.parameters()),
        "seed": seed,
    }
    META_FILE.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure_trained(steps: int = TRAIN_STEPS) -> dict[str, Any]:
    """Train once; afterwards read the saved training record."""
    if not trained():
        return train(steps)
    return dict(json.loads(META_FILE.read_text())) if META_FILE.is_file() else {}


def label_embedding() -> torch.Tensor:
    from safetensors.torch import load_file

    weight: torch.Tensor = load_file(str(EMBED_FILE))["weight"]
    return weight


def build_pipeline() -> Any:
    """A real ``StableDiffusionPipeline`` around the trained UNet (see the module docstring for the wiring)."""
    from asyncdiff.testing.tiny_pipelines import tiny_clip_text_config
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(str(UNET_DIR)).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(8,),
            latent_channels=1,
            norm_num_groups=4,
            sample_size=SIDE,
        ).eval()  # one block: vae_scale_factor 1, never run (output_type="latent")
        text_config = tiny_clip_text_config(EMBED_DIM, num_hidden_layers=1)
        text_encoder = CLIPTextModel(text_config).eval()  # never run: the call passes prompt_embeds
    from asyncdiff.testing.tiny_pipelines import _clip_tokenizer

    # clip_sample=False: StableDiffusionPipeline forces it off anyway (with a warning)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample_labels(n: int) -> list[int]:
    """``n`` labels cycling through 0-9 (64 samples: every digit 6-7 times)."""
    return [i % 10 for i in range(n)]


def generate(pipe: Any, labels: list[int], seed: int = 0, steps: int = STEPS, guidance: float = GUIDANCE) -> np.ndarray:
    """Denoise one batch (one pipeline call, CFG batched) and return (B, 16, 16) images in [-1, 1]."""
    emb = label_embedding()
    cond = emb[torch.tensor(labels)].unsqueeze(1)
    uncond = emb[torch.full((len(labels),), NULL_LABEL)].unsqueeze(1)
    with torch.no_grad():
        out = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=SIDE,
            width=SIDE,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
        )
    images = out.images
    return np.asarray(images.float().clamp(-1, 1).cpu().numpy()[:, 0], dtype=np.float32)


def train_classifier() -> tuple[Any, float]:
    """A logistic-regression digit classifier on the same 16x16 data; returns (model, held-out accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    x, y = load_digits_16()
    flat = x.reshape(len(x), -1)
    xtr, xte, ytr, yte = train_test_split(flat, y, test_size=0.25, random_state=0, stratify=y)
    held_out = LogisticRegression(max_iter=3000, C=0.5).fit(xtr, ytr)
    accuracy = float(held_out.score(xte, yte))
    return LogisticRegression(max_iter=3000, C=0.5).fit(flat, y), accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train (when absent) and sample the tiny digits model")
    parser.add_argument("command", choices=["train", "sample"])
    parser.add_argument("--force", action="store_true", help="retrain even if weights exist")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--resume", action="store_true", help="continue from the saved weights (EMA kept)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "train":
        if args.resume and trained():
            meta = train(args.steps, seed=args.seed, resume=True, lr=args.lr)
        else:
            meta = train(args.steps, seed=args.seed, lr=args.lr) if args.force or not trained() else ensure_trained()
        print(json.dumps(meta, indent=2))
        return 0
    clf, acc = train_classifier()
    labels = sample_labels(64)
    start = time.perf_counter()
    images = generate(build_pipeline(), labels)
    pred = clf.predict(images.reshape(len(images), -1))
    print(
        f"64 samples in {time.perf_counter() - start:.1f} s; classifier held-out {acc:.3f}; "
        f"accuracy on samples {float(np.mean(pred == np.array(labels))):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
