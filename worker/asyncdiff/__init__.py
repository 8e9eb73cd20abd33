"""AsyncDiff: model-parallel diffusion inference by asynchronous denoising.

Why this package: it turns an already loaded diffusers pipeline into a stage-split, asynchronously denoising one in
two lines (``AsyncDiff(pipe, model_n=2)`` then call the pipeline), inside torchrun processes, on NCCL or gloo.
"""

from typing import TYPE_CHECKING

from asyncdiff.errors import AsyncDiffError, ConfigError
from asyncdiff.families import FAMILIES, SUPPORTED_PIPELINE_CLASSES

if TYPE_CHECKING:
    from asyncdiff.async_diff import AsyncDiff
    from asyncdiff.plan import SplitPlan

__all__ = [
    "FAMILIES",
    "SUPPORTED_PIPELINE_CLASSES",
    "AsyncDiff",
    "AsyncDiffError",
    "ConfigError",
    "SplitPlan",
]


def __getattr__(name: str) -> object:
    # Lazy: importing the package (for the family table, say) must not import torch.
    if name == "AsyncDiff":
        from asyncdiff.async_diff import AsyncDiff

        return AsyncDiff
    if name == "SplitPlan":
        from asyncdiff.plan import SplitPlan

        return SplitPlan
    raise AttributeError(name)
