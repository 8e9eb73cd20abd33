"""The Dockerfile: hadolint clean, every target ends as a numeric non-root user, the operator image has no torch.

Why static checks: no Docker engine runs here (the images are built in .github/workflows/kind.yml). What can be
proved without building is proved here: the instructions of each stage (dockerfile-parse), the linter, and that
the operator extra's dependency closure cannot pull torch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
TARGETS = ("operator", "worker", "worker-cpu")


def _stages() -> dict[str, list[dict[str, str]]]:
    """Stage name -> its instructions (FROM first)."""
    from dockerfile_parse import DockerfileParser

    stages: dict[str, list[dict[str, str]]] = {}
    current: list[dict[str, str]] | None = None
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        if item["instruction"] == "FROM":
            name = item["value"].split()[-1] if " AS " in item["value"].upper() else str(len(stages))
            current = stages.setdefault(name, [])
        if current is not None:
            current.append(item)
    return stages


def _values(stage: list[dict[str, str]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def _global_args() -> dict[str, str]:
    from dockerfile_parse import DockerfileParser

    out: dict[str, str] = {}
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        if item["instruction"] == "FROM":
            break
        if item["instruction"] == "ARG" and "=" in item["value"]:
            key, _, value = item["value"].partition("=")
            out[key] = value
    return out


def test_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout + result.stderr


def test_targets_exist() -> None:
    assert set(TARGETS) <= set(_stages())


@pytest.mark.parametrize("target", TARGETS)
def test_final_user_is_numeric_non_root(target: str) -> None:
    users = _values(_stages()[target], "USER")
    assert users, f"{target}: no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"{target}: USER {users[-1]!r} must be a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"{target}: group {gid!r} must be numeric and not root"


def test_operator_target_installs_no_torch() -> None:
    stage = _stages()["operator"]
    runs = " ".join(_values(stage, "RUN"))
    assert "torch" not in runs.lower()
    assert re.search(r'"asyncdiff-operator\[operator\]==\$\{ASYNCDIFF_VERSION\}"', runs)
    assert _values(stage, "FROM")[0].startswith("${PYTHON_IMAGE}") and _global_args()["PYTHON_IMAGE"].startswith(
        "python:3.11-slim"
    )
    assert _values(stage, "ENTRYPOINT") == ['["asyncdiff-operator"]']


def _closure(requirements: list[str]) -> set[str]:
    """Names of the installed distributions these requirements pull in (markers for this interpreter)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            continue
    return seen


def test_operator_extra_cannot_pull_torch() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    closure = _closure(project["dependencies"] + project["optional-dependencies"]["operator"])
    assert "kopf" in closure and "kubernetes" in closure
    assert not {"torch", "diffusers", "transformers", "accelerate"} & closure


def test_worker_targets() -> None:
    stages, args = _stages(), _global_args()
    worker, cpu = stages["worker"], stages["worker-cpu"]
    assert _values(worker, "FROM")[0].startswith("${CUDA_IMAGE}")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "-runtime-" in args["CUDA_IMAGE"]
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", args["CUDA_IMAGE"])
    index = next(v for v in _values(worker, "ARG") if v.startswith("TORCH_INDEX="))
    assert cuda and index.endswith(f"/whl/cu{cuda.group(1)}{cuda.group(2)}"), "torch's CUDA must match the base image"
    assert "--index-url https://download.pytorch.org/whl/cpu" in " ".join(_values(cpu, "RUN"))
    for stage in (worker, cpu):
        runs = " ".join(_values(stage, "RUN"))
        assert '"torch==${TORCH_VERSION}"' in runs
        assert '"asyncdiff-operator[worker]==${ASYNCDIFF_VERSION}"' in runs
        assert _values(stage, "VOLUME") == ['["/var/cache/asyncdiff"]']
        assert _values(stage, "ENTRYPOINT") == ['["python", "-m", "asyncdiff_worker.launch"]']
        assert any("ASYNCDIFF_MODEL_CACHE=/var/cache/asyncdiff/models" in v for v in _values(stage, "ENV"))
    assert "build_tiny_pipeline" in " ".join(_values(cpu, "RUN"))


@pytest.mark.parametrize("target", ["worker", "worker-cpu"])
def test_worker_images_fit_the_restricted_read_only_pod(target: str) -> None:
    """The operator runs workers as uid/gid 10001 with a read-only root filesystem and emptyDirs at /tmp and the
    cache VOLUME: the image's user must be that uid and every path the image points a writer at must lie in them."""
    from asyncdiff_operator import podsecurity

    stage = _stages()[target]
    uid = podsecurity.WORKER_UID
    assert _values(stage, "USER")[-1] == f"{uid}:{uid}"
    assert _values(stage, "VOLUME") == [f'["{podsecurity.CACHE_DIR}"]']
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(_values(stage, "ENV"))))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # site-packages is read-only
    for name in ("ASYNCDIFF_MODEL_CACHE", "HF_HOME"):
        assert env[name].startswith(podsecurity.CACHE_DIR + "/"), (name, env[name])
        assert dict(podsecurity.WRITABLE_ENV)[name] == env[name]  # the pod says the same as the image
    runs = " ".join(_values(stage, "RUN"))
    assert f"--uid {uid} --gid {uid}" in runs and f"chown -R {uid}:{uid} {podsecurity.CACHE_DIR}" in runs


def test_pins_match_the_project() -> None:
    args = _global_args()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert args["ASYNCDIFF_VERSION"] == project["version"]
    makefile = (REPO / "Makefile").read_text()
    pin = re.search(r"TORCH_DEV_PIN \?= torch==(\S+)", makefile)
    assert pin and args["TORCH_VERSION"] == pin.group(1)


def test_dockerignore_admits_what_the_build_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"]
    copies = [v.split()[:-1] for s in _stages().values() for v in _values(s, "COPY") if "--from" not in v]
    for sources in copies:
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
            assert (REPO / source).exists()
