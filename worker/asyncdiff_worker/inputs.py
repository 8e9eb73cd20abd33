"""Reading a job's inputs: prompts (inline or a JSONL file) and input images, from any job URI.

Why checked here, before any model is loaded: a missing prompts file or an unreadable image is a user error that
must fail in seconds with a message naming the field and the URI, not after minutes of loading weights. The same
functions run in the ``asyncdiff run`` parent (before torchrun starts) and in every rank.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image

from asyncdiff_worker.errors import InputUnreadable, LimitExceeded, StorageRejected
from asyncdiff_worker.spec import limits
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.storage import ObjectTooLarge, Storage, StorageNotFound


@dataclass(frozen=True)
class PromptItem:
    """One prompt and its negative prompt."""

    text: str
    negative: str | None = None


def _read(uri: str, storage: Storage, field: str) -> bytes:
    try:
        return storage.get(uri, max_bytes=limits.MAX_INPUT_BYTES)
    except StorageNotFound as exc:
        raise InputUnreadable(f"{field}: {uri}: {exc.what} does not exist") from exc
    except ObjectTooLarge as exc:
        raise LimitExceeded(f"{field}: {uri}: {exc.size} bytes is more than the limit {exc.limit} bytes") from exc
    except StorageRejected as exc:
        raise InputUnreadable(f"{field}: {exc}") from exc


def parse_prompts_jsonl(data: bytes, source: str, field: str = "spec.generation.promptsFrom") -> list[PromptItem]:
    """Parse a JSONL prompts file: each non-empty line is a JSON string or
    ``{"prompt": ..., "negativePrompt": ...}``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputUnreadable(f"{field}: {source}: not UTF-8 text") from exc
    items: list[PromptItem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputUnreadable(f"{field}: {source}: line {lineno}: not valid JSON ({exc.msg})") from exc
        if isinstance(value, str):
            items.append(PromptItem(value))
        elif isinstance(value, dict) and isinstance(value.get("prompt"), str):
            negative = value.get("negativePrompt")
            if negative is not None and not isinstance(negative, str):
                raise InputUnreadable(f"{field}: {source}: line {lineno}: negativePrompt must be a string")
            items.append(PromptItem(value["prompt"], negative))
        else:
            raise InputUnreadable(f'{field}: {source}: line {lineno}: expected a JSON string or {{"prompt": "..."}}')
        prompt = items[-1]
        if len(prompt.text) > limits.MAX_PROMPT_CHARS or len(prompt.negative or "") > limits.MAX_PROMPT_CHARS:
            raise LimitExceeded(f"{field}: {source}: line {lineno}: longer than {limits.MAX_PROMPT_CHARS} characters")
        if len(items) > limits.MAX_FILE_PROMPTS:
            raise LimitExceeded(f"{field}: {source}: more than the limit of {limits.MAX_FILE_PROMPTS} prompts")
    if not items:
        raise InputUnreadable(f"{field}: {source}: contains no prompts")
    return items


def load_prompts(spec: JobSpec, storage: Storage) -> list[PromptItem]:
    """The job's prompts; svd has one empty prompt (its outputs vary by seed only)."""
    gen = spec.generation
    if spec.model.family == "svd":
        return [PromptItem("")]
    if gen.prompts is not None:
        items = [PromptItem(p, gen.negative_prompt) for p in gen.prompts]
    else:
        assert gen.prompts_from is not None
        data = _read(gen.prompts_from, storage, "spec.generation.promptsFrom")
        items = [
            PromptItem(p.text, p.negative if p.negative is not None else gen.negative_prompt)
            for p in parse_prompts_jsonl(data, gen.prompts_from)
        ]
    if gen.prompt_count is not None and gen.prompts_from is not None and gen.prompt_count != len(items):
        raise InputUnreadable(
            f"spec.generation.promptCount: {gen.prompt_count}, but {gen.prompts_from} holds {len(items)} prompts: "
            "set promptCount to the number of prompts in the file"
        )
    outputs = len(items) * gen.images_per_prompt
    cap = limits.MAX_OUTPUTS if gen.prompts is not None else limits.MAX_FILE_OUTPUTS
    if outputs > cap:
        raise LimitExceeded(
            f"spec.generation: {len(items)} prompts x {gen.images_per_prompt} images = {outputs} outputs is more "
            f"than the limit {cap}"
        )
    return items


def load_image(
    uri: str, storage: Storage, field: str, *, mode: str = "RGB", max_pixels: int | None = None
) -> Image.Image:
    """Read and decode one input image; raises ``InputUnreadable`` or ``LimitExceeded`` naming ``field``."""
    cap = max_pixels or limits.MAX_INPUT_PIXELS
    data = _read(uri, storage, field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > cap:
                raise LimitExceeded(f"{field}: {uri}: {width}x{height} pixels is more than the limit of {cap} pixels")
            image.load()
    except LimitExceeded:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputUnreadable(f"{field}: {uri}: cannot decode the image ({first})") from exc
    return image.convert(mode)


IMAGE_FIELDS: dict[str, str] = {
    "init_image": "spec.generation.initImage",
    "mask_image": "spec.generation.maskImage",
    "control_image": "spec.generation.controlImage",
    "conditioning_image": "spec.generation.conditioningImage",
}


def load_images(spec: JobSpec, storage: Storage) -> dict[str, Image.Image]:
    """Every input image the spec names, keyed by field name (``init_image``, ...)."""
    gen = spec.generation
    out: dict[str, Image.Image] = {}
    for attr, field in IMAGE_FIELDS.items():
        uri = getattr(gen, attr)
        if uri is None:
            continue
        cap = limits.MAX_UPSCALER_INPUT_PIXELS if spec.model.family == "sd-upscaler" else None
        out[attr] = load_image(uri, storage, field, mode="L" if attr == "mask_image" else "RGB", max_pixels=cap)
    return out
