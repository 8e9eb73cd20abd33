"""Bad jobs fail before torchrun starts, each with its message and exit code (``asyncdiff run``)."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_cli.main import main as cli_main
from asyncdiff_worker import preflight
from asyncdiff_worker.embedded_s3 import EmbeddedS3
from asyncdiff_worker.entrypoint import main as worker_main
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.launch import free_port
from asyncdiff_worker.local_run import run_job
from asyncdiff_worker.spec import limits
from PIL import Image


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """A folder shaped like a diffusers pipeline (never loaded: these jobs fail before)."""
    root = tmp_path / "model"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "U"]}')
    (root / "unet" / "config.json").write_text("{}")
    return root


@pytest.fixture
def base(fake_model: Path, tmp_path: Path) -> dict[str, Any]:
    return {
        "model": {"family": "sd15", "source": str(fake_model)},
        "generation": {"prompts": ["a"], "steps": 4, "height": 32, "width": 32},
        "output": {"uri": f"file://{tmp_path / 'out'}"},
    }


Runner = Callable[..., tuple[int, str]]


@pytest.fixture
def run_bad(tmp_path: Path, write_job: Any, capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(spec: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
        capsys.readouterr()
        code, manifest, result = run_job(write_job(tmp_path, spec, "bad"), quiet=True, **kwargs)
        assert manifest is None and result is None, "torchrun must not start for a bad job"
        return code, capsys.readouterr().err

    return run


def edit(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    section, key = path.split(".")
    if value is None:
        out[section].pop(key, None)
    else:
        out[section][key] = value
    return out


def png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (9, 9, 9)).save(buf, format="PNG")
    return buf.getvalue()


def test_unknown_family(run_bad: Runner, base: dict[str, Any]) -> None:
    code, err = run_bad(edit(base, "model.family", "sd99"))
    assert code == ExitCode.INVALID_SPEC == 10
    assert 'spec.model.family: "sd99" is not one of sd15, sd21' in err
    assert "InvalidSpec (exit 10, not retryable)" in err


def test_size_not_a_multiple_of_8_and_over_the_limit(run_bad: Runner, base: dict[str, Any]) -> None:
    code, err = run_bad(edit(edit(base, "generation.height", 100), "generation.width", 4096))
    assert code == ExitCode.INVALID_SPEC
    assert "spec.generation.height: 100 is not a multiple of 8" in err
    assert f"spec.generation.width: 4096 is more than the maximum {limits.MAX_SIDE}" in err


def test_missing_model_path(run_bad: Runner, base: dict[str, Any], tmp_path: Path) -> None:
    code, err = run_bad(edit(base, "model.source", str(tmp_path / "no-such-model")))
    assert code == ExitCode.MODEL_NOT_FOUND == 11
    assert (
        f"ModelNotFound (exit 11, not retryable): spec.model.source: {tmp_path / 'no-such-model'}: does not exist"
        in err
    )


def test_missing_model_on_s3(
    run_bad: Runner, base: dict[str, Any], s3_server: EmbeddedS3, bucket: str, s3_output: Any
) -> None:
    spec = edit(edit(base, "model.source", f"s3://{bucket}/models/none"), "output.uri", None)
    spec["output"] = s3_output(s3_server.endpoint_url, bucket)
    code, err = run_bad(spec)
    assert code == ExitCode.MODEL_NOT_FOUND
    assert f"spec.model.source: s3://{bucket}/models/none: no objects under this prefix" in err


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (None, "not a diffusers pipeline folder (model_index.json is missing)"),
        ("{not json", "model_index.json is not valid JSON"),
        ('{"unet": ["diffusers", "U"], "vae": ["diffusers", "V"]}', "component folder vae/ named in model_index.json"),
    ],
)
def test_corrupt_model_folder(
    run_bad: Runner, base: dict[str, Any], fake_model: Path, index: str | None, message: str
) -> None:
    if index is None:
        (fake_model / "model_index.json").unlink()
    else:
        (fake_model / "model_index.json").write_text(index)
    code, err = run_bad(base)
    assert code == ExitCode.MODEL_CORRUPT == 12
    assert message in err


def test_missing_prompts_file(run_bad: Runner, base: dict[str, Any], tmp_path: Path) -> None:
    spec = edit(edit(base, "generation.prompts", None), "generation.promptsFrom", str(tmp_path / "prompts.jsonl"))
    code, err = run_bad(spec)
    assert code == ExitCode.INPUT_UNREADABLE == 14
    assert f"spec.generation.promptsFrom: {tmp_path / 'prompts.jsonl'}: file does not exist" in err


def test_missing_prompts_object_on_s3(
    run_bad: Runner, base: dict[str, Any], s3_server: EmbeddedS3, bucket: str
) -> None:
    spec = edit(edit(base, "generation.prompts", None), "generation.promptsFrom", f"s3://{bucket}/p.jsonl")
    spec["output"] |= {"endpointUrl": s3_server.endpoint_url, "forcePathStyle": True}
    code, err = run_bad(spec)
    assert code == ExitCode.INPUT_UNREADABLE
    assert f"spec.generation.promptsFrom: s3://{bucket}/p.jsonl: object does not exist" in err


def test_missing_output_bucket(run_bad: Runner, base: dict[str, Any], s3_server: EmbeddedS3, s3_output: Any) -> None:
    code, err = run_bad(base | {"output": s3_output(s3_server.endpoint_url, "no-such-bucket-here")})
    assert code == ExitCode.STORAGE_REJECTED == 16
    assert (
        "StorageRejected (exit 16, not retryable): spec.output.uri: s3://no-such-bucket-here: bucket does not exist"
        in err
    )


def test_wrong_credentials(
    run_bad: Runner, base: dict[str, Any], iam_s3: dict[str, str], monkeypatch: pytest.MonkeyPatch, s3_output: Any
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, err = run_bad(base | {"output": s3_output(iam_s3["endpoint"], iam_s3["bucket"])})
    assert code == ExitCode.STORAGE_REJECTED
    assert "access denied (SignatureDoesNotMatch): the secret access key is wrong" in err


def test_s3_unreachable_is_retryable(run_bad: Runner, base: dict[str, Any], s3_output: Any) -> None:
    code, err = run_bad(base | {"output": s3_output(f"http://127.0.0.1:{free_port()}", "some-bucket")})
    assert code == ExitCode.STORAGE_UNAVAILABLE == 20
    assert "StorageUnavailable (exit 20, retryable)" in err and "failed after 3 attempts" in err


def test_unreadable_input_image(
    run_bad: Runner, base: dict[str, Any], s3_server: EmbeddedS3, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="in/broken.png", Body=b"\x89PNG\r\n\x1a\n but then garbage")
    spec = edit(base, "generation.initImage", f"s3://{bucket}/in/broken.png")
    spec["output"] |= {"endpointUrl": s3_server.endpoint_url, "forcePathStyle": True}
    code, err = run_bad(spec)
    assert code == ExitCode.INPUT_UNREADABLE
    assert f"spec.generation.initImage: s3://{bucket}/in/broken.png: cannot decode the image" in err


def test_limits_on_data_read_at_run_time(run_bad: Runner, base: dict[str, Any], tmp_path: Path) -> None:
    prompts = tmp_path / "many.jsonl"
    prompts.write_text('"p"\n' * (limits.MAX_FILE_PROMPTS + 1))
    code, err = run_bad(edit(edit(base, "generation.prompts", None), "generation.promptsFrom", str(prompts)))
    assert code == ExitCode.LIMIT_EXCEEDED == 15
    assert f"more than the limit of {limits.MAX_FILE_PROMPTS} prompts" in err

    big = tmp_path / "big.png"
    big.write_bytes(png((1100, 1000)))
    upscale = edit(
        edit(edit(base, "model.family", "sd-upscaler"), "generation.initImage", str(big)), "generation.height", None
    )
    code, err = run_bad(edit(upscale, "generation.width", None))
    assert code == ExitCode.LIMIT_EXCEEDED
    assert f"1100x1000 pixels is more than the limit of {limits.MAX_UPSCALER_INPUT_PIXELS} pixels" in err


def test_mp4_without_pyav_is_unsupported(
    run_bad: Runner, base: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(preflight, "mp4_codec", lambda: None)
    cond = tmp_path / "c.png"
    cond.write_bytes(png((32, 32)))
    spec = edit(
        edit(edit(base, "model.family", "svd"), "generation.prompts", None), "generation.conditioningImage", str(cond)
    )
    code, err = run_bad(spec)
    assert code == ExitCode.UNSUPPORTED == 13
    assert "spec.output.format: mp4 needs PyAV" in err


def test_nproc_must_match_the_spec(run_bad: Runner, base: dict[str, Any]) -> None:
    code, err = run_bad(base, nproc=3)
    assert code == ExitCode.INVALID_SPEC
    assert "--nproc 3: the job needs modelN + stride - 1 = 2 + 1 - 1 = 2 processes" in err


def test_cli_dispatch_and_worker_entrypoint(
    base: dict[str, Any], tmp_path: Path, write_job: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_job(tmp_path, edit(base, "model.family", "nope"), "cli")
    assert cli_main(["run", str(path)]) == 10
    assert cli_main(["run", str(tmp_path / "missing.yaml")]) == 10
    assert "job: cannot read" in capsys.readouterr().err
    # the rank entry point, in-process: same code, a JSON error line, the termination log
    assert worker_main(["--spec", str(path)]) == 10
    out = capsys.readouterr().out
    assert '"asyncdiff":"error"' in out and '"exitCode":10' in out
    assert (
        (tmp_path / "termination-log").read_text().startswith("InvalidSpec (exit 10, not retryable): spec.model.family")
    )
