"""End to end: a job with ``parallelism.cfgParallel`` and ``generation.batchSize`` runs the right world size, passes
cfg_parallel to AsyncDiff, and stores the same images as the plain one-output-per-call job (same seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asyncdiff_worker.local_run import run_job
from PIL import Image

pytestmark = pytest.mark.slow


def _pixels(manifest: Any) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(Path(o.uri.removeprefix("file://"))), dtype=np.int16)
        for o in sorted(manifest.outputs, key=lambda o: o.index)
    ]


def test_cfg_parallel_batched_job_equals_the_plain_job(tiny_model_dir: Any, tmp_path: Path, write_job: Any) -> None:
    def job(name: str, parallelism: dict[str, Any], batch_size: int) -> Any:
        spec = {
            "model": {"family": "sd15", "source": str(tiny_model_dir("sd15")), "dtype": "float32"},
            "parallelism": parallelism,
            "generation": {
                "prompts": ["a red cube", "a blue sphere"],
                "negativePrompt": "blurry",
                "imagesPerPrompt": 2,
                "batchSize": batch_size,
                "steps": 3,
                "height": 32,
                "width": 32,
                "seed": 11,
                "guidanceScale": 5.0,
            },
            "output": {"uri": f"file://{tmp_path / 'out'}"},
        }
        code, manifest, result = run_job(write_job(tmp_path, spec, name), quiet=True)
        assert code == 0, result
        return manifest

    plain = job("plain", {"modelN": 1, "stride": 1}, 1)  # model_n 1, one process: the plain pipeline
    cfg = job("cfg-batched", {"modelN": 1, "stride": 1, "cfgParallel": True}, 3)  # 2 processes; calls of 3 + 1
    assert plain.runtime.world_size == 1 and cfg.runtime.world_size == 2
    assert cfg.stats["cfg_parallel"] is True and cfg.stats["world_size"] == 2
    assert [o.seed for o in cfg.outputs] == [o.seed for o in plain.outputs] == [11, 12, 13, 14]
    for a, b in zip(_pixels(plain), _pixels(cfg), strict=True):
        assert a.shape == (32, 32, 3)
        assert int(np.abs(a - b).max()) <= 1  # 8-bit PNGs: float reordering may flip one rounding
