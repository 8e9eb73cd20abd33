"""The CRD's CEL rules and the pydantic models accept exactly the same parallelism / guidance / nodes combinations.

Why: the operator validates a CR with pydantic (``parse_spec``) and the API server with the generated CEL rules; if
they disagreed, a CR could pass ``kubectl apply`` and then fail in the operator (or the reverse). This runs the
checked-in CRD's schema pass (defaulting, then CEL, with the local API server's evaluator) over a grid of specs,
without starting a server.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import yaml
from asyncdiff_devcluster.apiserver import schema
from asyncdiff_operator.api import parse_spec
from pydantic import ValidationError

from .conftest import CRD

BASE: dict[str, Any] = {
    "model": {"family": "sd15", "source": "/models/tiny"},
    "generation": {"prompts": ["a red cube"], "steps": 4},
    "output": {"uri": "file:///tmp/out"},
}
_ABSENT = object()


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def _spec(model_n: int, stride: int, cfg: Any, guidance: Any, nodes: int, gpus: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    spec["parallelism"] = {"modelN": model_n, "stride": stride} | ({} if cfg is _ABSENT else {"cfgParallel": cfg})
    if guidance is not _ABSENT:
        spec["generation"]["guidanceScale"] = guidance
    spec["runPolicy"] = {"numNodes": nodes} | ({} if gpus is _ABSENT else {"gpusPerNode": gpus})
    return spec


GRID = list(
    itertools.product(
        (1, 2, 3, 4),  # modelN
        (1, 2),  # stride
        (_ABSENT, False, True),  # cfgParallel
        (_ABSENT, 1, 1.0, 5.0),  # guidanceScale (an integer 1 as YAML gives it, too)
        (1, 2),  # numNodes
        (_ABSENT, 0, 1, 2, 3, 4),  # gpusPerNode
    )
)


def test_cel_and_pydantic_agree_on_every_combination() -> None:
    crd_schema = _crd_schema()
    disagreements = []
    accepted = rejected = 0
    for combo in GRID:
        spec = _spec(*combo)
        try:
            parse_spec(spec)
            pydantic_ok = True
        except ValidationError:
            pydantic_ok = False
        body = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": "x"}, "spec": spec}
        errors = schema.process(body, crd_schema).errors
        if pydantic_ok != (not errors):
            disagreements.append((combo, pydantic_ok, [(e.field, e.detail) for e in errors]))
        accepted += pydantic_ok
        rejected += not pydantic_ok
    assert not disagreements, disagreements[:5]
    assert accepted > 50 and rejected > 50  # the grid exercises both sides of every rule


def test_cel_and_pydantic_agree_on_batch_size_per_family() -> None:
    crd_schema = _crd_schema()
    for family, batch in itertools.product(("sd15", "sdxl", "svd", "sd-upscaler", "animatediff"), (_ABSENT, 1, 2, 4)):
        spec = copy.deepcopy(BASE)
        spec["model"]["family"] = family
        if batch is not _ABSENT:
            spec["generation"]["batchSize"] = batch
        try:
            parse_spec(spec)
            pydantic_ok = True
        except ValidationError:
            pydantic_ok = False
        body = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": "x"}, "spec": spec}
        errors = schema.process(body, crd_schema).errors
        assert pydantic_ok == (not errors), (family, batch, errors)
        assert pydantic_ok == (batch in (_ABSENT, 1) or family not in ("svd", "sd-upscaler"))
        if errors:
            assert [e.field for e in errors] == ["spec.generation.batchSize"]


@pytest.mark.parametrize(
    ("combo", "field"),
    [
        ((1, 2, _ABSENT, _ABSENT, 1, _ABSENT), "spec.parallelism.stride"),
        ((2, 1, True, 1.0, 1, _ABSENT), "spec.parallelism.cfgParallel"),
        ((2, 1, True, _ABSENT, 1, 2), "spec.runPolicy.gpusPerNode"),  # cfg doubles 2 devices to 4
        ((1, 1, True, 5.0, 2, 2), "spec.runPolicy.gpusPerNode"),  # 2 x 2 = 4, but plain CFG parallel needs 2
    ],
)
def test_cel_names_the_field(combo: tuple[Any, ...], field: str) -> None:
    body = {"apiVersion": "asyncdiff.io/v1alpha1", "kind": "AsyncDiffJob", "metadata": {"name": "x"}}
    errors = schema.process(body | {"spec": _spec(*combo)}, _crd_schema()).errors
    assert field in [e.field for e in errors], errors
