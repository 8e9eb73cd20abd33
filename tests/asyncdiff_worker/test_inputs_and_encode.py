"""Reading prompts and input images (with limits), and encoding images and videos."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from asyncdiff_worker import encode
from asyncdiff_worker.errors import InputUnreadable, LimitExceeded
from asyncdiff_worker.inputs import load_image, load_prompts, parse_prompts_jsonl
from asyncdiff_worker.spec import AsyncDiffJob, limits, validate_job
from asyncdiff_worker.storage import Storage
from PIL import Image


def spec_with(**generation: Any) -> Any:
    job = validate_job(
        {
            "model": {"family": "sd15", "source": "/m"},
            "generation": {"steps": 4, **generation},
            "output": {"uri": "file:///tmp/out"},
        }
    )
    assert isinstance(job, AsyncDiffJob), job
    return job.spec


def test_prompts_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('"plain"\n\n{"prompt": "obj", "negativePrompt": "neg"}\n{"prompt": "default neg"}\n')
    items = load_prompts(spec_with(promptsFrom=str(path), negativePrompt="global"), Storage())
    assert [(p.text, p.negative) for p in items] == [("plain", "global"), ("obj", "neg"), ("default neg", "global")]


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (b"", InputUnreadable, "contains no prompts"),
        (b'"ok"\n{bad json\n', InputUnreadable, "line 2: not valid JSON"),
        (b'{"text": "x"}\n', InputUnreadable, 'line 1: expected a JSON string or {"prompt": "..."}'),
        (b"\xff\xfe", InputUnreadable, "not UTF-8 text"),
        (
            b'"x"\n' * (limits.MAX_FILE_PROMPTS + 1),
            LimitExceeded,
            f"more than the limit of {limits.MAX_FILE_PROMPTS} prompts",
        ),
        (json.dumps("x" * (limits.MAX_PROMPT_CHARS + 1)).encode(), LimitExceeded, "longer than"),
    ],
)
def test_bad_prompts_files(content: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("{", r"\{").replace("(", r"\(")):
        parse_prompts_jsonl(content, "s3://b/p.jsonl")


def test_outputs_limit_after_reading_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    count = limits.MAX_FILE_OUTPUTS // 16 + 1  # a batch file may hold far more than inline prompts, not unlimited
    path.write_text('"x"\n' * count)
    with pytest.raises(
        LimitExceeded, match=f"{count} prompts x 16 images = {count * 16} outputs is more than the limit"
    ):
        load_prompts(spec_with(promptsFrom=str(path), imagesPerPrompt=16), Storage())


def test_images(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 8), (255, 0, 0)).save(good)
    image = load_image(str(good), Storage(), "spec.generation.initImage")
    assert image.size == (16, 8) and image.mode == "RGB"
    assert load_image(str(good), Storage(), "spec.generation.maskImage", mode="L").mode == "L"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputUnreadable, match=r"spec.generation.initImage: .*bad.png: cannot decode the image"):
        load_image(str(bad), Storage(), "spec.generation.initImage")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(InputUnreadable, match="cannot decode the image"):
        load_image(str(truncated), Storage(), "spec.generation.initImage")
    with pytest.raises(InputUnreadable, match="file does not exist"):
        load_image(str(tmp_path / "none.png"), Storage(), "spec.generation.initImage")
    with pytest.raises(LimitExceeded, match="16x8 pixels is more than the limit of 100 pixels"):
        load_image(str(good), Storage(), "spec.generation.initImage", max_pixels=100)


FRAMES = [Image.new("RGB", (32, 32), (i * 60, 0, 255 - i * 60)) for i in range(4)]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_image(fmt: str) -> None:
    data = encode.encode_image(FRAMES[1], fmt, 90)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert decoded.size == (32, 32)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_encode_video_with_pillow(fmt: str) -> None:
    decoded = Image.open(io.BytesIO(encode.encode_video(FRAMES, fmt, fps=8)))
    assert decoded.n_frames == 4 and decoded.size == (32, 32)


def test_encode_mp4() -> None:
    av = pytest.importorskip("av", reason="PyAV (worker extra) encodes mp4")
    data = encode.encode_video(FRAMES, "mp4", fps=8)
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (32, 32)
    assert encode.mp4_codec() in ("libx264", "libopenh264", "mpeg4")
