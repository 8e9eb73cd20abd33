"""Shared command line, loading, timing and saving of the AsyncDiff example scripts.

Why: the nine examples (one per pipeline family) differ only in their family and their real-model inputs.
Keeping the launch contract (``torchrun --nproc_per_node=K examples/<family>.py --model-n N --stride S
--warm-up W ...``), the ``--tiny`` offline mode, the timing and the saving here keeps each example a few lines
long and all of them consistent.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("asyncdiff") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(_REPO / "worker"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from asyncdiff.families import FAMILIES  # noqa: E402

RealInputs = Callable[[argparse.Namespace], dict[str, Any]]
"""Per-family pipeline inputs for a real checkpoint (prompt, images, sizes), from the parsed arguments."""

DEFAULT_MODELS: dict[str, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl-inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    "sdxl-controlnet": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "sd-upscaler": "stabilityai/stable-diffusion-x4-upscaler",
    "svd": "stabilityai/stable-video-diffusion-img2vid-xt",
    "animatediff": "emilianJR/epiCRealism",
}
DEFAULT_CONTROLNET = "diffusers/controlnet-canny-sdxl-1.0"
DEFAULT_MOTION_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-2"

# The reference's preferred warm-up per family (default 9); --tiny runs use 1 so that async steps happen.
DEFAULT_WARM_UP: dict[str, int] = {"sd3": 1, "svd": 1, "animatediff": 2, "sdxl-controlnet": 3}
DEFAULT_STEPS: dict[str, int] = {"sd3": 28, "svd": 25, "animatediff": 25}
TINY_STEPS = 8


def parse_args(family: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The example command line; the family decides which optional inputs exist."""
    fam = FAMILIES[family]
    p = argparse.ArgumentParser(
        description=f"AsyncDiff example for the {family} family. Launch with "
        "`torchrun --nproc_per_node=<model-n + stride - 1, x 2 with --cfg-parallel> " + sys.argv[0] + " ...`."
    )
    p.add_argument("--model", help=f"hub id or local folder (default: {DEFAULT_MODELS[family]}, or --tiny)")
    p.add_argument("--tiny", action="store_true", help="without --model: build a tiny random model offline")
    p.add_argument("--layout", choices=("minimal", "real"), default="real", help="tiny model layout")
    p.add_argument("--model-n", type=int, default=2, help="number of components N (1, 2, 3, 4; 1: no split)")
    p.add_argument("--stride", type=int, default=1, help="stride S (1, 2); world size is N + S - 1")
    p.add_argument("--warm-up", type=int, default=None, help="warm-up steps W (default: the family's)")
    p.add_argument("--time-shift", action="store_true", help="feed each component the previous timestep")
    p.add_argument(
        "--cfg-parallel", action="store_true", help="one guidance half per stage group (exact); doubles the world size"
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the family's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=2, help="pipeline calls; the first one plans and warms up")
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the output image or GIF")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto")
    if family != "svd":
        p.add_argument("--prompt", default=None)
    if len(fam.pipeline_classes) > 1:
        p.add_argument("--img2img", action="store_true", help="use the image-to-image pipeline")
    p.add_argument("--image", type=Path, default=None, help="input image (default: a generated pattern)")
    if family == "sdxl-inpaint":
        p.add_argument("--mask", type=Path, default=None, help="inpainting mask (default: a centred square)")
    if family == "sdxl-controlnet":
        p.add_argument("--controlnet", default=None, help=f"ControlNet id or folder (default {DEFAULT_CONTROLNET})")
    if family == "animatediff":
        p.add_argument("--motion-adapter", default=None, help=f"default {DEFAULT_MOTION_ADAPTER}")
    args = p.parse_args(argv)
    args.family = family
    args.tiny = args.tiny and args.model is None
    if args.warm_up is None:
        args.warm_up = 1 if args.tiny else DEFAULT_WARM_UP.get(family, 9)
    if args.steps is None:
        args.steps = TINY_STEPS if args.tiny else DEFAULT_STEPS.get(family, 50)
    return args


def input_image(args: argparse.Namespace, size: int | tuple[int, int], kind: str = "rgb") -> Any:
    """``--image`` (``--mask`` for a mask) resized to ``size``, else a generated pattern (no download)."""
    from asyncdiff.testing.tiny_pipelines import pattern_image
    from PIL import Image

    path = getattr(args, "mask" if kind == "mask" else "image", None)
    target = (size, size) if isinstance(size, int) else size
    if path is None:
        return pattern_image(target, kind)
    return Image.open(path).convert("RGB").resize(target)


def _dtype(args: argparse.Namespace) -> torch.dtype:
    if args.dtype != "auto":
        dtype: torch.dtype = getattr(torch, args.dtype)
        return dtype
    return torch.float16 if torch.cuda.is_available() and not args.tiny else torch.float32


@contextmanager
def model_source(args: argparse.Namespace) -> Iterator[str]:
    """The model to load: --model, a tiny model built in a temporary folder (--tiny), or the family default.

    Every rank builds its own tiny copy: weights depend only on the seed, so all ranks hold the same model.
    """
    if args.model is not None:
        yield args.model
    elif args.tiny:
        from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

        with tempfile.TemporaryDirectory(prefix=f"tiny-{args.family}-") as tmp:
            yield str(build_tiny_pipeline(args.family, tmp, layout=args.layout, seed=0))
    else:
        yield DEFAULT_MODELS[args.family]


def load(args: argparse.Namespace, source: str) -> Any:
    """Load the pipeline through ``asyncdiff.loading`` (fp16 for real checkpoints on CUDA)."""
    from asyncdiff.loading import load_pipeline

    local = Path(source).is_dir()
    controlnet = getattr(args, "controlnet", None)
    if args.family == "sdxl-controlnet" and controlnet is None and not local:
        controlnet = DEFAULT_CONTROLNET
    adapter = getattr(args, "motion_adapter", None)
    if args.family == "animatediff" and adapter is None and not local:
        adapter = DEFAULT_MOTION_ADAPTER
    return load_pipeline(
        args.family,
        source,
        dtype=_dtype(args),
        img2img=getattr(args, "img2img", False),
        controlnet=controlnet,
        motion_adapter=adapter,
    )


def call_kwargs(args: argparse.Namespace, real_inputs: RealInputs) -> dict[str, Any]:
    """Pipeline arguments of one run: the tiny test inputs or the family's real ones, a fresh generator."""
    if args.tiny:
        from asyncdiff.testing.tiny_pipelines import example_call_kwargs

        return example_call_kwargs(
            args.family, steps=args.steps, seed=args.seed, img2img=getattr(args, "img2img", False)
        )
    kwargs = real_inputs(args)
    kwargs.update(
        num_inference_steps=args.steps,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        output_type="np",
    )
    return kwargs


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()


def timed_run(pipe: Any, kwargs_for_run: Callable[[], dict[str, Any]]) -> tuple[Any, float]:
    """Call the pipeline once, all ranks starting together; (result, seconds)."""
    kwargs = kwargs_for_run()
    _synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        result = pipe(**kwargs)
    _synchronize()
    return result, time.perf_counter() - start


def save_output(result: Any, args: argparse.Namespace) -> Path:
    """Save the first image as PNG, or the first video as an animated GIF; return the path."""
    from asyncdiff.testing.tiny_pipelines import output_array
    from PIL import Image

    data = output_array(result)[0]
    pixels = (np.clip(data, 0.0, 1.0) * 255).round().astype(np.uint8)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.family}_n{args.model_n}s{args.stride}w{args.warm_up}" + ("_ts" if args.time_shift else "")
    if FAMILIES[args.family].video:
        path = out / f"{stem}.gif"
        frames = [Image.fromarray(frame) for frame in pixels]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // 7, loop=0)
    else:
        path = out / f"{stem}.png"
        Image.fromarray(pixels).save(path)
    return path


def _quiet() -> None:
    """No download/loading progress bars: with several ranks they interleave on one terminal line."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def run_example(family: str, real_inputs: RealInputs, argv: list[str] | None = None) -> None:
    """Parse the command line, load, wrap with AsyncDiff, run ``--runs`` times; rank 0 reports and saves."""
    from asyncdiff import AsyncDiff

    args = parse_args(family, argv)
    _quiet()
    with model_source(args) as source:
        pipe = load(args, source)
    async_diff = AsyncDiff(
        pipe,
        model_n=args.model_n,
        stride=args.stride,
        warm_up=args.warm_up,
        time_shift=args.time_shift,
        cfg_parallel=args.cfg_parallel,
    )
    rank = dist.get_rank()
    latencies: list[float] = []
    result: Any = None
    for _ in range(max(args.runs, 1)):
        result, seconds = timed_run(pipe, lambda: call_kwargs(args, real_inputs))
        latencies.append(seconds)
    if rank == 0:
        if async_diff.plan is not None:
            print(async_diff.plan.describe())
        stats = async_diff.stats()
        path = save_output(result, args)
        runs = ", ".join(f"{s:.3f}" for s in latencies)
        print(f"{family}: latency {latencies[-1]:.3f} s (runs: {runs}; first includes planning)")
        print(f"{family}: sent {stats.get('bytes_sent_last_generation', 0)} bytes in the last run (rank 0)")
        print(f"{family}: saved {path}")
    dist.barrier()
    dist.destroy_process_group()
