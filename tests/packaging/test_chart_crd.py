"""The chart's CRD is the repository's generated CRD, byte for byte, and it is a valid apiextensions/v1 object.

Why: the CRD is generated from the job spec into crds/ (``python -m asyncdiff_operator.crd``) while the chart ships
a copy in files/crds/ (a chart cannot read outside its folder). When the API changes, this test fails until the copy
is refreshed, so a chart release can never install a stale schema.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from tests.packaging.helm_chart import CHART, KUBE_VERSION, REPO, VALUE_SETS, by_kind, render

REPO_CRD = REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
CHART_CRD = CHART / "files" / "crds" / "asyncdiff.io_asyncdiffjobs.yaml"
EXAMPLE = REPO / "examples" / "jobs" / "tiny-sd.yaml"


def test_chart_copy_equals_the_generated_crd() -> None:
    assert CHART_CRD.read_bytes() == REPO_CRD.read_bytes(), (
        f"{CHART_CRD.relative_to(REPO)} differs from {REPO_CRD.relative_to(REPO)}; refresh it with: "
        f"cp {REPO_CRD.relative_to(REPO)} {CHART_CRD.relative_to(REPO)}"
    )


def _rendered_crd() -> dict[str, object]:
    crds = [c for c in by_kind(render(), "CustomResourceDefinition") if c["metadata"]["name"].endswith("asyncdiff.io")]
    assert len(crds) == 1
    return crds[0]


def test_rendered_crd_is_the_file_plus_labels_and_keep() -> None:
    rendered = _rendered_crd()
    metadata = dict(rendered["metadata"])  # type: ignore[call-overload]
    assert metadata.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
    assert metadata.pop("annotations") == {"helm.sh/resource-policy": "keep"}
    expected = yaml.safe_load(REPO_CRD.read_text())
    assert {**rendered, "metadata": metadata} == expected


def test_keep_policy_and_install_switch() -> None:
    no_keep = [
        c
        for c in by_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
        if "annotations" in c["metadata"]
    ]
    assert no_keep == []
    assert not by_kind(render(VALUE_SETS["no-crds-no-rbac"]), "CustomResourceDefinition")


def test_crd_is_valid_and_accepts_the_example_job() -> None:
    import kubernetes_validate

    crd = yaml.safe_load(REPO_CRD.read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    validator = jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
    job = yaml.safe_load(Path(EXAMPLE).read_text())
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)]
    assert errors == []


def test_notes_first_job_is_a_valid_asyncdiffjob() -> None:
    from tests.packaging.helm_chart import render_files

    notes = next(text for path, text in render_files().items() if path.endswith("NOTES.txt"))
    block = notes.split("cat <<'YAML' | kubectl apply -f -\n", 1)[1].split("\n   YAML\n", 1)[0]
    job = yaml.safe_load("\n".join(line.removeprefix("   ") for line in block.splitlines()))
    crd = yaml.safe_load(REPO_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    validator = jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)] == []
    assert job["kind"] == "AsyncDiffJob" and job["metadata"]["name"] == "first-job"
