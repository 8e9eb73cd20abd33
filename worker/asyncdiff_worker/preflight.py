"""Checks that fail a job fast, before torchrun starts or any weights are loaded.

Why: every user error that can be found cheaply (missing model folder, a model folder that is not a diffusers
pipeline or not of the job's family, a missing prompts file, an unreadable input image, a missing bucket, wrong
credentials, an output format this machine cannot encode) should cost seconds, not a torchrun start (~7 s of imports
per process) plus model loading. ``asyncdiff run`` and the launcher run these in the parent; every rank runs them
again (cheaply) so a worker started by torchrun directly fails with the same codes and messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from asyncdiff_worker.calls import OutputItem, output_format, plan_outputs
from asyncdiff_worker.encode import mp4_codec
from asyncdiff_worker.errors import ModelCorrupt, ModelNotFound, StorageRejected, Unsupported
from asyncdiff_worker.inputs import PromptItem, load_images, load_prompts
from asyncdiff_worker.keys import JobLayout
from asyncdiff_worker.model_family import check_family
from asyncdiff_worker.spec.models import JobSpec
from asyncdiff_worker.spec.uris import parse_location
from asyncdiff_worker.storage import Storage, StorageNotFound


@dataclass
class Prepared:
    """What preflight read: the prompts, the decoded input images and the planned outputs."""

    prompts: list[PromptItem]
    images: dict[str, Image.Image]
    outputs: list[OutputItem]
    notes: list[str] = field(default_factory=list)


def check_format_support(spec: JobSpec) -> None:
    if output_format(spec) == "mp4" and mp4_codec() is None:
        raise Unsupported(
            "spec.output.format: mp4 needs PyAV (pip install av, or the worker extra); use gif or webp instead"
        )


def _check_pipeline_files(files: set[str], source: str, field_name: str, index_json: bytes | None) -> dict[str, Any]:
    """``files`` are paths relative to the model folder; returns the parsed model_index.json."""
    if "model_index.json" not in files or index_json is None:
        raise ModelCorrupt(f"{field_name}: {source}: not a diffusers pipeline folder (model_index.json is missing)")
    try:
        index = json.loads(index_json)
        if not isinstance(index, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise ModelCorrupt(f"{field_name}: {source}: model_index.json is not valid JSON ({exc})") from exc
    folders = {f.split("/", 1)[0] for f in files if "/" in f}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[0] is None:
            continue
        if name not in folders:
            raise ModelCorrupt(f"{field_name}: {source}: component folder {name}/ named in model_index.json is missing")
    return index


def _check_component_files(files: set[str], source: str, field_name: str) -> None:
    if "config.json" not in files:
        raise ModelCorrupt(f"{field_name}: {source}: not a diffusers model folder (config.json is missing)")


def _listing(source: str, storage: Storage, field_name: str) -> tuple[set[str], bytes | None]:
    """Relative file names under a model source, and its model_index.json (if any)."""
    loc = parse_location(source)
    if not loc.is_s3:
        path = loc.path
        if not path.exists():
            raise ModelNotFound(f"{field_name}: {source}: does not exist")
        if not path.is_dir():
            raise ModelNotFound(f"{field_name}: {source}: is a file, not a folder")
        files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        index = path / "model_index.json"
        return files, index.read_bytes() if index.is_file() else None
    try:
        objects = storage.list(loc)
    except StorageNotFound as exc:
        raise ModelNotFound(f"{field_name}: {source}: {exc.what} does not exist") from exc
    except StorageRejected as exc:
        raise StorageRejected(f"{field_name}: {exc}") from exc
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    files = {o.key[len(prefix) :] for o in objects if o.key.startswith(prefix)}
    if not files:
        raise ModelNotFound(f"{field_name}: {source}: no objects under this prefix")
    index_bytes = storage.get(loc.child("model_index.json")) if "model_index.json" in files else None
    return files, index_bytes


def check_model(spec: JobSpec, storage: Storage) -> None:
    """The model source and component sources exist, look like diffusers folders, and the model is of the job's
    family (its model_index.json; a mismatch is a user error, never retried)."""
    files, index = _listing(spec.model.source, storage, "spec.model.source")
    parsed = _check_pipeline_files(files, spec.model.source, "spec.model.source", index)
    check_family(parsed, spec.model.family, spec.model.source)
    for attr, field_name in (("controlnet", "spec.model.controlnet"), ("motion_adapter", "spec.model.motionAdapter")):
        source = getattr(spec.model, attr)
        if source is not None:
            comp_files, _ = _listing(source, storage, field_name)
            _check_component_files(comp_files, source, field_name)


def check_output(layout: JobLayout, storage: Storage) -> None:
    """The output bucket exists and the credentials are accepted (or the folder is writable)."""
    try:
        storage.check_writable(layout.root)
    except StorageRejected as exc:
        raise StorageRejected(f"spec.output.uri: {exc}") from exc


def preflight(
    spec: JobSpec,
    storage: Storage,
    layout: JobLayout | None,
    *,
    model: bool = True,
) -> Prepared:
    """Run the checks (output first when ``layout`` is given, then format, inputs, model) and return the inputs."""
    if layout is not None:
        check_output(layout, storage)
    check_format_support(spec)
    prompts = load_prompts(spec, storage)
    images = load_images(spec, storage)
    if model:
        check_model(spec, storage)
    return Prepared(prompts, images, plan_outputs(spec, prompts))
