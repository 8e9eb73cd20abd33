"""One validation everywhere: the same bad manifests are refused by ``asyncdiff run`` and by the API server (the
local control plane enforcing the checked-in CRD: schema, strict field validation as kubectl sends it, CEL), each
naming the same field.

Every CEL rule of the job (``asyncdiff_worker.spec.rules.RULES``) has a case here; a new rule without one fails
``test_every_job_rule_has_a_case``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.local_run import run_job
from asyncdiff_worker.spec import limits
from asyncdiff_worker.spec.rules import RULES
from kubernetes.client.exceptions import ApiException

from .conftest import CRD, E2E, OperatorProcess, job_manifest

pytestmark = pytest.mark.slow

Edit = Callable[[dict[str, Any]], None]


def _set(**fields: Any) -> Edit:
    """Set ``section.field`` values in spec (a value of None removes the field)."""

    def edit(spec: dict[str, Any]) -> None:
        for path, value in fields.items():
            section, name = path.split("__")
            if value is None:
                spec.setdefault(section, {}).pop(name, None)
            else:
                spec.setdefault(section, {})[name] = value

    return edit


def _family(family: str, **fields: Any) -> Edit:
    return _set(model__family=family, **fields)


def _rule(field: str, message: str) -> int:
    return next(i for i, r in enumerate(RULES) if r.field == field and r.message.startswith(message))


_MANY = limits.MAX_OUTPUTS // limits.MAX_IMAGES_PER_PROMPT + 1

# (id, edit of the base spec, the field both must name, the CEL rule it exercises or None for schema cases)
CASES: list[tuple[str, Edit, str, int | None]] = [
    ("snake-case-modelN", _set(parallelism__model_n=2), "spec.parallelism.model_n", None),
    ("steps-as-string", _set(generation__steps="20"), "spec.generation.steps", None),
    ("bool-as-string", _set(parallelism__timeShift="true"), "spec.parallelism.timeShift", None),
    ("modelN-5", _set(parallelism__modelN=5), "spec.parallelism.modelN", None),
    ("numNodes-3", _set(runPolicy__numNodes=3), "spec.runPolicy.numNodes", None),
    ("reserved-env", _set(pod__env=[{"name": "MASTER_ADDR", "value": "x"}]), "spec.pod.env[0].name", None),
    ("uri-scheme", _set(output__uri="/tmp/out"), "spec.output.uri", _rule("output.uri", "must be")),
    ("controlnet-sd15", _set(model__controlnet="/m/cn"), "spec.model.controlnet", _rule("model.controlnet", "only")),
    (
        "controlnet-missing",
        _family("sdxl-controlnet", generation__controlImage="/c.png"),
        "spec.model.controlnet",
        _rule("model.controlnet", "is required"),
    ),
    (
        "adapter-sd15",
        _set(model__motionAdapter="/m/ad"),
        "spec.model.motionAdapter",
        _rule("model.motionAdapter", "only"),
    ),
    (
        "adapter-missing",
        _family("animatediff"),
        "spec.model.motionAdapter",
        _rule("model.motionAdapter", "is required"),
    ),
    (
        "svd-prompts",
        _family("svd", generation__conditioningImage="/c.png"),
        "spec.generation.prompts",
        _rule("generation.prompts", "svd takes"),
    ),
    (
        "svd-promptsFrom",
        _family("svd", generation__conditioningImage="/c.png", generation__prompts=None, generation__promptsFrom="/p"),
        "spec.generation.promptsFrom",
        _rule("generation.promptsFrom", "svd takes"),
    ),
    (
        "svd-negative",
        _family(
            "svd", generation__conditioningImage="/c.png", generation__prompts=None, generation__negativePrompt="x"
        ),
        "spec.generation.negativePrompt",
        _rule("generation.negativePrompt", "svd takes"),
    ),
    (
        "no-prompts",
        _set(generation__prompts=None),
        "spec.generation.prompts",
        _rule("generation.prompts", "give prompts"),
    ),
    (
        "prompts-and-promptsFrom",
        _set(generation__promptsFrom="/p.jsonl"),
        "spec.generation.promptsFrom",
        _rule("generation.promptsFrom", "give either"),
    ),
    (
        "too-many-outputs",
        _set(generation__prompts=["a"] * _MANY, generation__imagesPerPrompt=limits.MAX_IMAGES_PER_PROMPT),
        "spec.generation.imagesPerPrompt",
        _rule("generation.imagesPerPrompt", "prompts x"),
    ),
    (
        "init-image-animatediff",
        _family("animatediff", model__motionAdapter="/m/ad", generation__initImage="/i.png"),
        "spec.generation.initImage",
        _rule("generation.initImage", "only"),
    ),
    (
        "init-image-missing",
        _family("sd-upscaler", generation__height=None, generation__width=None),
        "spec.generation.initImage",
        _rule("generation.initImage", "is required"),
    ),
    (
        "mask-sd15",
        _set(generation__maskImage="/m.png"),
        "spec.generation.maskImage",
        _rule("generation.maskImage", "only"),
    ),
    (
        "mask-missing",
        _family("sdxl-inpaint", generation__initImage="/i.png"),
        "spec.generation.maskImage",
        _rule("generation.maskImage", "is required"),
    ),
    (
        "control-image-sd15",
        _set(generation__controlImage="/c.png"),
        "spec.generation.controlImage",
        _rule("generation.controlImage", "only"),
    ),
    (
        "control-image-missing",
        _family("sdxl-controlnet", model__controlnet="/m/cn"),
        "spec.generation.controlImage",
        _rule("generation.controlImage", "is required"),
    ),
    (
        "conditioning-sd15",
        _set(generation__conditioningImage="/c.png"),
        "spec.generation.conditioningImage",
        _rule("generation.conditioningImage", "only"),
    ),
    (
        "conditioning-missing",
        _family("svd", generation__prompts=None),
        "spec.generation.conditioningImage",
        _rule("generation.conditioningImage", "is required"),
    ),
    ("frames-sd15", _set(generation__numFrames=4), "spec.generation.numFrames", _rule("generation.numFrames", "only")),
    (
        "upscaler-height",
        _family("sd-upscaler", generation__initImage="/i.png", generation__width=None),
        "spec.generation.height",
        _rule("generation.height", "sd-upscaler"),
    ),
    (
        "upscaler-width",
        _family("sd-upscaler", generation__initImage="/i.png", generation__height=None),
        "spec.generation.width",
        _rule("generation.width", "sd-upscaler"),
    ),
    ("mp4-for-images", _set(output__format="mp4"), "spec.output.format", _rule("output.format", "images are")),
    (
        "warm-up-steps",
        _set(generation__steps=2, parallelism__warmUp=2),
        "spec.parallelism.warmUp",
        _rule("parallelism.warmUp", "must be less"),
    ),
    ("goal-without-devices", _set(parallelism__goal="latency"), "spec.parallelism.goal", _rule("parallelism.goal", "")),
    (
        "quality-without-devices",
        _set(parallelism__quality="exact"),
        "spec.parallelism.quality",
        _rule("parallelism.quality", ""),
    ),
]


def manifest(name: str, edit: Edit) -> dict[str, Any]:
    body = job_manifest(name, "/models/tiny", Path("/tmp/out"))
    spec = copy.deepcopy(body["spec"])
    edit(spec)
    body["spec"] = spec
    return body


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """A control plane with the CRD and no operator: only the API server's admission is tested."""
    from asyncdiff_devcluster.testing import running_dev_cluster

    root = tmp_path_factory.mktemp("parity")
    with running_dev_cluster(root / "cluster") as cluster:
        env = cluster.env(KUBECACHEDIR=str(root / "kcache"))
        harness = E2E(cluster, env, OperatorProcess(env, root / "none.log"), root)
        harness.kubectl("apply", "-f", str(CRD))
        yield harness


def test_every_job_rule_has_a_case() -> None:
    assert {rule for *_, rule in CASES if rule is not None} == set(range(len(RULES)))


def test_the_base_manifest_is_accepted_by_both(api: E2E, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from asyncdiff_worker.launch import validate
    from asyncdiff_worker.local_run import manifest_spec_model

    body = manifest("parity-good", lambda spec: None)
    api.custom.create_namespaced_custom_object(
        "asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", body, field_validation="Strict"
    )
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(body))
    validate(path, spec_model=manifest_spec_model())  # raises SpecError on any message


@pytest.mark.parametrize(("case", "edit", "field", "rule"), CASES, ids=[c[0] for c in CASES])
def test_refused_by_both_naming_the_same_field(
    api: E2E,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    edit: Edit,
    field: str,
    rule: int | None,
) -> None:
    body = manifest(f"parity-{case.lower()}", edit)
    # the API server, as kubectl apply sends it (strict field validation)
    with pytest.raises(ApiException) as info:
        api.custom.create_namespaced_custom_object(
            "asyncdiff.io", "v1alpha1", "default", "asyncdiffjobs", body, field_validation="Strict"
        )
    assert info.value.status in (400, 422), info.value.body
    server = json.loads(info.value.body)
    assert field in server["message"], server
    if rule is not None:
        assert RULES[rule].message in server["message"], server
    # asyncdiff run, before anything starts
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    capsys.readouterr()
    code, manifest_, result = run_job(path, quiet=True)
    err = capsys.readouterr().err
    assert manifest_ is None and result is None
    assert code == ExitCode.INVALID_SPEC, err
    assert f"  {field}: " in err, err


def test_the_asyncdiff_command_refuses_what_the_issue_named(tmp_path: Path) -> None:
    """``model_n`` in snake case and ``steps: "20"``, through the console command as a user runs it."""
    body = manifest("snake", _set(parallelism__model_n=2, generation__steps="20"))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    result = subprocess.run(
        [sys.executable, "-m", "asyncdiff_cli.main", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == ExitCode.INVALID_SPEC, result.stderr
    assert "spec.parallelism.model_n: is not a known field" in result.stderr
    assert 'spec.generation.steps: "20" is not an integer' in result.stderr
    assert "Traceback" not in result.stderr
