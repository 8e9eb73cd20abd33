"""Load a diffusers pipeline of a supported family from a hub id or a local folder.

Why a module: the examples, the worker and the tests must all turn "family + model source" into the same
ready pipeline: the family's pipeline class (or its img2img variant), an extra ControlNet or motion adapter
that real checkpoints keep in their own repositories, no safety checker, and no progress bars interleaving
across ranks. It imports torch; diffusers is imported only when a pipeline is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from asyncdiff.errors import ConfigError
from asyncdiff.families import FAMILIES, Family

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

_SAFETY_CHECKED = frozenset({"sd15", "sd21", "sd-upscaler"})
"""Families whose pipelines carry a safety checker; we drop it (tests and benchmarks compare pixels)."""


def family_for(name: str) -> Family:
    """The family called ``name``, or a ConfigError naming the allowed ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError("family", name, "one of " + ", ".join(FAMILIES)) from None


def pipeline_class_for(family: str, img2img: bool = False) -> type:
    """The diffusers pipeline class of ``family`` (its image-to-image variant when ``img2img``)."""
    import diffusers

    fam = family_for(family)
    if img2img and len(fam.pipeline_classes) < 2:
        raise ConfigError("img2img", img2img, f"family {family!r} has no image-to-image pipeline")
    cls: type = getattr(diffusers, fam.pipeline_classes[1 if img2img else 0])
    return cls


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The ``from_pretrained`` dtype keyword: ``dtype`` where diffusers reads it, else ``torch_dtype``."""
    try:
        from diffusers.utils import _resolve_dtype  # noqa: F401  (present where ``dtype`` is understood)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _local_components(source: str | Path) -> set[str] | None:
    """Component names of a local pipeline folder (from model_index.json), or None for hub ids."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return None
    data = json.loads(index.read_text())
    return {name for name, value in data.items() if not name.startswith("_") and isinstance(value, list)}


def _extra_models(
    family: str,
    source: str | Path,
    dtype: torch.dtype,
    controlnet: str | None,
    motion_adapter: str | None,
) -> dict[str, Any]:
    """Load the ControlNet / motion adapter given by their own sources; check one is available at all."""
    extra: dict[str, Any] = {}
    local = _local_components(source)
    if controlnet is not None:
        from diffusers import ControlNetModel

        extra["controlnet"] = ControlNetModel.from_pretrained(controlnet, **dtype_kwargs(dtype))
    elif family == "sdxl-controlnet" and local is not None and "controlnet" not in local:
        raise ConfigError("controlnet", None, f"a ControlNet id or path (the folder {source} has none)")
    if motion_adapter is not None:
        from diffusers import MotionAdapter

        extra["motion_adapter"] = MotionAdapter.from_pretrained(motion_adapter, **dtype_kwargs(dtype))
    elif family == "animatediff" and local is not None and "motion_adapter" not in local:
        raise ConfigError("motion_adapter", None, f"a MotionAdapter id or path (the folder {source} has none)")
    return extra


def load_pipeline(
    family: str,
    source: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    img2img: bool = False,
    controlnet: str | None = None,
    motion_adapter: str | None = None,
) -> DiffusionPipeline:
    """Load the ``family`` pipeline from ``source`` (hub id or local folder), ready to call.

    ``controlnet`` / ``motion_adapter`` name separate checkpoints; without them the pipeline folder must hold
    the model itself (the tiny test pipelines do). Safety checkers are disabled and progress bars are off.
    """
    cls = pipeline_class_for(family, img2img)
    if controlnet is not None and family != "sdxl-controlnet":
        raise ConfigError("controlnet", controlnet, "only for family 'sdxl-controlnet'")
    if motion_adapter is not None and family != "animatediff":
        raise ConfigError("motion_adapter", motion_adapter, "only for family 'animatediff'")
    kwargs: dict[str, Any] = _extra_models(family, source, dtype, controlnet, motion_adapter)
    if family in _SAFETY_CHECKED:
        kwargs["safety_checker"] = None
        if family != "sd-upscaler":
            kwargs["requires_safety_checker"] = False
    pipe: DiffusionPipeline = cls.from_pretrained(  # type: ignore[attr-defined]
        str(source), **dtype_kwargs(dtype), **kwargs
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
