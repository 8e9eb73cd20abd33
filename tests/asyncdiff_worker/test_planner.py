"""The layout planner: table cases for both goals, explicit fields kept as constraints, bad input named, and
``asyncdiff plan`` printing the same choice."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncdiff_worker.exit_codes import ExitCode
from asyncdiff_worker.plan_cli import main as plan_main
from asyncdiff_worker.planner import PlanError, memory_per_device, plan_layout, resolve_layout
from asyncdiff_worker.spec import JobSpec, validate_job

BASE: dict[str, Any] = {
    "model": {"family": "sd21", "source": "/models/x"},
    "generation": {"prompts": [f"p{i}" for i in range(64)], "steps": 50},
    "output": {"uri": "file:///tmp/out"},
}


def spec_of(parallelism: dict[str, Any], family: str = "sd21", **generation: Any) -> JobSpec:
    data = copy.deepcopy(BASE)
    data["model"]["family"] = family
    if family == "animatediff":
        data["model"]["motionAdapter"] = "/models/adapter"
    data["parallelism"] = parallelism
    data["generation"].update(generation)
    job = validate_job(data)
    assert not isinstance(job, list), job
    return job.spec


def layout(
    parallelism: dict[str, Any], family: str = "sd21", memory: float | None = None
) -> tuple[int, int, bool, int]:
    plan = plan_layout(spec_of(parallelism, family), gpu_memory_gib=memory)
    lay = plan.layout
    assert lay.devices == parallelism["devices"]
    return lay.model_n, lay.stride, lay.cfg_parallel, lay.replicas


@pytest.mark.parametrize(
    ("parallelism", "family", "memory", "expected"),
    [
        # throughput: one plain pipeline per device when it fits
        ({"devices": 8, "goal": "throughput"}, "sd21", None, (1, 1, False, 8)),
        ({"devices": 8}, "sdxl", None, (1, 1, False, 8)),  # goal defaults to throughput
        # a model that does not fit one device: the fewest devices per group that fit (SD3: T5 + MMDiT)
        ({"devices": 6, "goal": "throughput"}, "sd3", 16.0, (3, 1, False, 2)),
        ({"devices": 8, "goal": "throughput", "quality": "any"}, "sd3", 16.0, (3, 2, False, 2)),
        # latency: the fastest group at the default quality (high: LPIPS <= 0.30 -> N3 S1 at most), x CFG parallel
        ({"devices": 6, "goal": "latency"}, "sd21", None, (3, 1, True, 1)),
        ({"devices": 4, "goal": "latency"}, "sd21", None, (2, 1, True, 1)),
        # latency at quality any: N3 S2 (4.0x in the paper) on 4 devices, twice on 8
        ({"devices": 4, "goal": "latency", "quality": "any"}, "sd21", None, (3, 2, False, 1)),
        ({"devices": 8, "goal": "latency", "quality": "any"}, "sd21", None, (3, 2, True, 1)),
        # latency, exact: CFG parallel only, the rest replicas
        ({"devices": 8, "goal": "latency", "quality": "exact"}, "sd21", None, (1, 1, True, 4)),
        # explicit fields are constraints
        ({"devices": 8, "modelN": 4, "goal": "latency", "quality": "any"}, "sd21", None, (4, 1, True, 1)),
        ({"devices": 8, "modelN": 2, "stride": 1, "cfgParallel": False}, "sd21", None, (2, 1, False, 4)),
        ({"devices": 6, "replicas": 3, "cfgParallel": False}, "sd21", None, (2, 1, False, 3)),
        # an upscaler has no CFG to split; AnimateDiff splits into 3 stages at most
        ({"devices": 4, "goal": "latency", "quality": "any"}, "animatediff", None, (3, 2, False, 1)),
    ],
)
def test_table(
    parallelism: dict[str, Any], family: str, memory: float | None, expected: tuple[int, int, bool, int]
) -> None:
    assert layout(parallelism, family, memory) == expected


def test_reason_names_the_source_and_memory() -> None:
    plan = plan_layout(spec_of({"devices": 3, "goal": "latency"}, "sd15"))
    assert plan.layout.model_n == 3 and "sd21 figure (sd15 not measured)" in plan.reason  # the paper has no N3 S1
    assert plan.to_dict()["devices"] == 3
    sd3 = plan_layout(spec_of({"devices": 6}, "sd3"), gpu_memory_gib=16.0)
    assert f"needs {memory_per_device('sd3', 1):.1f} GiB on one device, more than 16" in sd3.reason


def test_resolve_writes_the_layout_in_and_is_stable() -> None:
    spec = spec_of({"devices": 8, "goal": "latency"})
    resolved, plan = resolve_layout(spec)
    assert plan is not None
    par = resolved.parallelism
    lay = plan.layout
    assert (
        (par.model_n, par.stride, par.cfg_parallel, par.replicas)
        == (2, 1, True, 2)
        == (
            lay.model_n,
            lay.stride,
            lay.cfg_parallel,
            lay.replicas,
        )
    )
    assert par.devices == 8 == par.devices_per_group * par.replicas
    assert {"model_n", "stride", "replicas"} <= par.model_fields_set
    again, plan2 = resolve_layout(resolved)
    assert again == resolved and plan2 is not None and plan2.layout == plan.layout
    unplanned = spec_of({"modelN": 2})
    assert resolve_layout(unplanned) == (unplanned, None)


@pytest.mark.parametrize(
    ("parallelism", "message"),
    [
        ({"goal": "latency"}, "spec.parallelism.goal: needs spec.parallelism.devices"),
        ({"quality": "exact"}, "spec.parallelism.quality: needs spec.parallelism.devices"),
        ({"devices": 0}, "spec.parallelism.devices: 0 is less than the minimum 1"),
        ({"devices": 7, "modelN": 2, "cfgParallel": False}, "spec.parallelism.devices: 7 device(s) cannot"),
        ({"devices": 8, "modelN": 2, "replicas": 3}, "spec.parallelism.devices: 8 does not match the explicit layout"),
        ({"devices": 4, "modelN": 4, "goal": "latency", "quality": "exact"}, "spec.parallelism.quality: no layout"),
    ],
)
def test_bad_planner_input(parallelism: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(BASE)
    data["parallelism"] = parallelism
    errors = validate_job(data)
    assert isinstance(errors, list) and any(e.startswith(message) for e in errors), errors


def test_plan_errors_name_the_field() -> None:
    with pytest.raises(PlanError, match="--devices: 5 device"):
        plan_layout(spec_of({"modelN": 2, "stride": 1, "cfgParallel": False}), devices=5)
    # SD3 on 16 GiB devices needs modelN >= 3; on 8 devices only N4 S1 divides, which is below high quality
    with pytest.raises(PlanError, match=r"spec\.parallelism\.quality: no layout of 8 device"):
        plan_layout(spec_of({"devices": 8}, "sd3"), gpu_memory_gib=16.0)


def test_asyncdiff_plan_prints_the_operators_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    manifest = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": "b"}}
    path.write_text(yaml.safe_dump({**manifest, "spec": copy.deepcopy(BASE)}))
    assert plan_main([str(path), "--devices", "8"]) == 0
    out = capsys.readouterr().out
    assert "layout: 8 replica(s) x modelN 1 stride 1" in out and "8 shard(s) of 8 outputs" in out
    assert plan_main([str(path), "--devices", "8", "--goal", "latency", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = plan_layout(spec_of({"devices": 8, "goal": "latency"})).to_dict()
    assert data["layout"] == expected
    assert plan_main([str(path), "--devices", "0"]) == int(ExitCode.INVALID_SPEC)
    assert "--devices: 0 is less than the minimum 1" in capsys.readouterr().err
