"""Shared pytest set-up: offline model hubs, importable sources, and the session cache of tiny models.

Why here: every test that touches diffusers must never reach a model hub, and many tests (sequential runs,
multi-process AsyncDiff runs, the worker) need the same tiny pipelines. Building each one once per session and
handing out its folder keeps the suite fast on 2 cores.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Before anything imports huggingface_hub / transformers / diffusers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One intra-op thread per process (torchrun children get the same default). The tiny models gain nothing from
# more, and on the 2-core CI machine a 2-thread OpenMP pool next to other busy processes spin-waits: measured
# 14 s with 1 thread against 71-142 s with 2 for the tiny-pipeline tests under load. Set it to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_REPO = Path(__file__).resolve().parent.parent


def _is_regular_package(name: str) -> bool:
    # tests/asyncdiff (mirroring the sources, no __init__.py) would otherwise pass for a namespace package.
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


# `make install` installs the packages in editable mode; a bare checkout with only the dependencies works too.
for _package, _folder in (("asyncdiff", "worker"), ("asyncdiff_operator", "operator")):
    if not _is_regular_package(_package) and (_REPO / _folder / _package).is_dir():
        sys.path.insert(0, str(_REPO / _folder))

TinyModelDir = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> TinyModelDir:
    """Factory ``tiny_model_dir(family, layout="minimal", seed=0) -> Path``: a saved tiny pipeline folder.

    Each (family, layout, seed) is built once per session; treat the folder as read-only.
    """
    root = tmp_path_factory.mktemp("tiny_models")
    cache: dict[tuple[str, str, int], Path] = {}

    def get(family: str, layout: str = "minimal", seed: int = 0) -> Path:
        key = (family, layout, seed)
        if key not in cache:
            from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

            cache[key] = build_tiny_pipeline(family, root / f"{family}-{layout}-{seed}", layout=layout, seed=seed)
        return cache[key]

    return get
