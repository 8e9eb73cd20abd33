"""End to end: ``asyncdiff run`` -> torchrun (gloo, 2 processes) -> AsyncDiff on tiny models -> S3 (moto) or files.

Each job is one torchrun start (~10 s on 2 cores, mostly imports), so every job makes several outputs and checks
several things at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.launch import main as launch_main
from asyncdiff_worker.local_run import run_job
from PIL import Image

pytestmark = pytest.mark.slow


def pattern(size: int) -> Image.Image:
    from asyncdiff.testing.tiny_pipelines import pattern_image

    image: Image.Image = pattern_image(size)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def listing(s3: Any, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o for o in objects}


def test_sd15_model_from_s3_outputs_to_s3_and_a_rerun_is_idempotent(
    tiny_model_dir: Any,
    s3_server: EmbeddedS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upload_folder: Any,
    write_job: Any,
    s3_output: Any,
) -> None:
    upload_folder(s3, tiny_model_dir("sd15"), bucket, "models/tiny-sd15")
    progress_file = tmp_path / "progress.json"
    monkeypatch.setenv("ASYNCDIFF_PROGRESS_FILE", str(progress_file))
    spec = {
        "model": {"family": "sd15", "source": f"s3://{bucket}/models/tiny-sd15", "dtype": "float32"},
        "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1},
        "generation": {
            "prompts": ["a red cube", "a blue sphere"],
            "negativePrompt": "blurry",
            "imagesPerPrompt": 2,
            "steps": 4,
            "height": 32,
            "width": 32,
            "seed": 7,
            "guidanceScale": 5.0,
        },
        "output": s3_output(s3_server.endpoint_url, bucket),
    }
    job_path = write_job(tmp_path, spec, "tiny-sd")
    code, manifest, result = run_job(job_path, quiet=True)
    assert code == 0, result
    assert manifest is not None and result is not None

    expected_keys = [f"results/tiny-sd/outputs/0000{i}-p000{i // 2}.png" for i in range(4)]
    objects = listing(s3, bucket, "results/")
    markers = [k for k in objects if k.startswith("results/tiny-sd/_shards/")]
    assert len(markers) == 1 and markers[0].endswith("/00000.json")  # one shard, one marker of this run
    assert sorted(set(objects) - set(markers)) == ["results/tiny-sd/manifest.json", *expected_keys]
    assert manifest.rendered == 4 and {o.attempt for o in manifest.outputs} == {1}
    assert [o.uri for o in manifest.outputs] == [f"s3://{bucket}/{k}" for k in expected_keys]
    for record, key in zip(manifest.outputs, expected_keys, strict=True):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        head = s3.head_object(Bucket=bucket, Key=key)
        assert hashlib.sha256(body).hexdigest() == record.sha256 == head["Metadata"]["sha256"]
        assert head["ContentType"] == "image/png"
        assert head["Metadata"]["seed"] == str(record.seed) == str(7 + record.index)
        assert head["Metadata"]["prompt-index"] == str(record.prompt_index)
        assert head["Metadata"]["job-uid"] == manifest.job.uid
        assert Image.open(io.BytesIO(body)).size == (32, 32)
    assert manifest.plan is not None and manifest.plan_description
    assert manifest.runtime.world_size == 2 and manifest.runtime.backend == "gloo"
    assert manifest.configuration.parallelism.model_n == 2
    assert manifest.timings.startup_seconds > 0 and manifest.timings.seconds_per_output > 0

    kinds = [e["asyncdiff"] for e in result.events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("output") == 4 and "progress" in kinds, kinds  # "download" only if rank 0 won the lock
    steps = [e for e in result.events if e["asyncdiff"] == "progress"]
    assert steps[-1]["step"] == 4 and steps[-1]["steps"] == 4
    assert json.loads(progress_file.read_text())["asyncdiff"] == "done"
    cache = [p for p in Path(tmp_path / "model-cache").iterdir() if p.is_dir()]
    assert len(cache) == 1 and (cache[0] / "model_index.json").is_file()
    cached_at = (cache[0] / ".asyncdiff-complete.json").stat().st_mtime

    # the same job again: every output reused (nothing rendered, the model not even loaded), the same records,
    # the previous run's marker replaced by this run's
    code2, manifest2, result2 = run_job(job_path, quiet=True)
    assert code2 == 0 and manifest2 is not None and result2 is not None
    again = listing(s3, bucket, "results/")
    markers2 = [k for k in again if k.startswith("results/tiny-sd/_shards/")]
    assert len(markers2) == 1 and markers2 != markers
    assert sorted(set(again) - set(markers2)) == sorted(set(objects) - set(markers))
    assert manifest2.rendered == 0 and manifest2.job.run_id != manifest.job.run_id
    assert [o.model_dump() for o in manifest2.outputs] == [o.model_dump() for o in manifest.outputs]
    assert "loading" not in [e.get("phase") for e in result2.events]
    assert manifest2.job.uid == manifest.job.uid
    assert (cache[0] / ".asyncdiff-complete.json").stat().st_mtime == cached_at


def test_sdxl_local_model_prompts_from_s3_to_files_as_jpeg(
    tiny_model_dir: Any, s3_server: EmbeddedS3, s3: Any, bucket: str, tmp_path: Path, write_job: Any
) -> None:
    s3.put_object(
        Bucket=bucket, Key="prompts.jsonl", Body=b'"a castle"\n{"prompt": "a forest", "negativePrompt": "fog"}\n'
    )
    out = tmp_path / "out"
    spec = {
        "model": {"family": "sdxl", "source": str(tiny_model_dir("sdxl"))},
        "generation": {"promptsFrom": f"s3://{bucket}/prompts.jsonl", "steps": 4, "height": 32, "width": 32, "seed": 1},
        "output": {
            "uri": f"file://{out}",
            "format": "jpeg",
            "endpointUrl": s3_server.endpoint_url,
            "forcePathStyle": True,
        },
    }
    code, manifest, _ = run_job(write_job(tmp_path, spec, "sdxl-job"), quiet=True)
    assert code == 0 and manifest is not None
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    visible = [f for f in files if "/_shards/" not in f and not f.rsplit("/", 1)[-1].startswith(".")]
    assert visible == ["sdxl-job/manifest.json", "sdxl-job/outputs/00000-p0000.jpg", "sdxl-job/outputs/00001-p0001.jpg"]
    assert "sdxl-job/outputs/.00000-p0000.jpg.meta.json" in files  # the metadata sidecar resume reads
    for record in manifest.outputs:
        path = Path(record.uri.removeprefix("file://"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
        image = Image.open(path)
        assert image.format == "JPEG" and image.size == (32, 32)
    assert [o.prompt for o in manifest.outputs] == ["a castle", "a forest"]
    assert json.loads((out / "sdxl-job/manifest.json").read_text())["status"] == "Succeeded"


def test_svd_makes_an_mp4_video(
    tiny_model_dir: Any, s3_server: EmbeddedS3, s3: Any, bucket: str, tmp_path: Path, write_job: Any, s3_output: Any
) -> None:
    av = pytest.importorskip("av", reason="PyAV (worker extra) encodes mp4")
    cond = tmp_path / "cond.png"
    pattern(32).save(cond)
    spec = {
        "model": {"family": "svd", "source": str(tiny_model_dir("svd"))},
        "generation": {
            "conditioningImage": f"file://{cond}",
            "numFrames": 2,
            "fps": 4,
            "steps": 3,
            "height": 32,
            "width": 32,
            "guidanceScale": 3.0,
            "seed": 3,
        },
        "output": s3_output(s3_server.endpoint_url, bucket, format="mp4"),
    }
    code, manifest, _ = run_job(write_job(tmp_path, spec, "svd-job"), quiet=True)
    assert code == 0 and manifest is not None
    (record,) = manifest.outputs
    assert record.uri == f"s3://{bucket}/results/svd-job/outputs/00000-p0000.mp4"
    assert record.content_type == "video/mp4" and record.frames == 2
    body = s3.get_object(Bucket=bucket, Key="results/svd-job/outputs/00000-p0000.mp4")["Body"].read()
    with av.open(io.BytesIO(body)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (32, 32)


def test_upscaler_reads_its_input_image_from_s3(
    tiny_model_dir: Any, s3_server: EmbeddedS3, s3: Any, bucket: str, tmp_path: Path, write_job: Any, s3_output: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="inputs/low.png", Body=png_bytes(pattern(16)))
    spec = {
        "model": {"family": "sd-upscaler", "source": str(tiny_model_dir("sd-upscaler"))},
        "generation": {
            "prompts": ["sharp"],
            "initImage": f"s3://{bucket}/inputs/low.png",
            "noiseLevel": 20,
            "steps": 4,
            "imagesPerPrompt": 2,
        },
        "output": s3_output(s3_server.endpoint_url, bucket, format="webp"),
    }
    code, manifest, _ = run_job(write_job(tmp_path, spec, "upscale"), quiet=True)
    assert code == 0 and manifest is not None
    assert len(manifest.outputs) == 2
    for record in manifest.outputs:
        key = record.uri.removeprefix(f"s3://{bucket}/")
        image = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert image.format == "WEBP" and image.size == (64, 64)


def test_corrupt_weights_fail_in_the_workers_with_model_corrupt(
    tiny_model_dir: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], write_job: Any
) -> None:
    model = tmp_path / "broken-sd15"
    shutil.copytree(tiny_model_dir("sd15"), model)
    weights = next((model / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    spec = {
        "model": {"family": "sd15", "source": str(model)},
        "generation": {"prompts": ["x"], "steps": 4, "height": 32, "width": 32},
        "output": {"uri": f"file://{tmp_path / 'out'}"},
    }
    code, manifest, result = run_job(write_job(tmp_path, spec, "corrupt"), quiet=True)
    assert code == ExitCode.MODEL_CORRUPT and manifest is None
    assert result is not None and result.failure is not None
    assert "cannot load the sd15 pipeline" in result.failure.message
    log = (tmp_path / "termination-log").read_text()
    assert log.startswith("ModelCorrupt (exit 12, not retryable): spec.model.source:")
    assert not (tmp_path / "out" / "corrupt" / "manifest.json").exists()


def test_s3_going_down_during_uploads_is_retried_then_a_retryable_failure(
    tiny_model_dir: Any, s3: Any, bucket: str, tmp_path: Path, cuttable_proxy: Any, write_job: Any, s3_output: Any
) -> None:
    proxy = cuttable_proxy(pattern=rb"PUT /[^ ]*/outputs/", allow=1)
    spec = {
        "model": {"family": "sd15", "source": str(tiny_model_dir("sd15"))},
        "generation": {"prompts": ["a", "b", "c"], "steps": 4, "height": 32, "width": 32},
        "output": s3_output(proxy.endpoint, bucket),
    }
    code, manifest, result = run_job(write_job(tmp_path, spec, "flaky"), quiet=True)
    assert code == ExitCode.STORAGE_UNAVAILABLE and manifest is None
    assert result is not None and result.failure is not None and result.failure.rank == 0
    assert "failed after 3 attempts" in result.failure.message
    assert (tmp_path / "termination-log").read_text().startswith("StorageUnavailable (exit 20, retryable):")
    keys = sorted(listing(s3, bucket, "results/"))
    assert keys == ["results/flaky/outputs/00000-p0000.png"]  # one output made it; no manifest: not committed


def test_bare_torchrun_workers_report_their_own_exit_code(tmp_path: Path, write_job: Any) -> None:
    """Without the parent's checks the ranks find the missing prompts file themselves (before importing torch)."""
    spec = {
        "model": {"family": "sd15", "source": str(tmp_path)},
        "generation": {"promptsFrom": str(tmp_path / "missing.jsonl"), "steps": 4},
        "output": {"uri": f"file://{tmp_path / 'out'}"},
    }
    code = launch_main(["--spec", str(write_job(tmp_path, spec, "noprompts")), "--no-preflight"])
    assert code == ExitCode.INPUT_UNREADABLE
    log = (tmp_path / "termination-log").read_text()
    assert log.startswith("InputUnreadable (exit 14, not retryable): spec.generation.promptsFrom:")
    assert "missing.jsonl: file does not exist" in log
