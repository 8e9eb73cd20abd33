"""Static checks of the kind suite's files, which only run on Docker hosts: valid manifests, a valid job, a workflow
that runs the suite, a script that parses (bash -n) and has its steps.

Why here: tests/kind/run.sh cannot run on this machine, so at least its inputs are checked where the suite runs.
"""

from __future__ import annotations

import subprocess

import jsonschema
import yaml

from tests.packaging.helm_chart import KUBE_VERSION, REPO

KIND = REPO / "tests" / "kind"


def test_minio_manifest_is_valid() -> None:
    import kubernetes_validate

    text = (KIND / "minio.yaml").read_text().replace("MINIO_IMAGE", "minio/minio:RELEASE.2025-04-22T22-12-26Z")
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {d["kind"] for d in docs} == {"Namespace", "Secret", "Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_kind_job_is_a_valid_asyncdiffjob() -> None:
    job = yaml.safe_load((KIND / "tiny-job.yaml").read_text())
    crd = yaml.safe_load((REPO / "crds" / "asyncdiff.io_asyncdiffjobs.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    validator = jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(job)] == []
    assert job["spec"]["runPolicy"]["gpusPerNode"] == 0 and job["spec"]["pod"]["image"] == "asyncdiff-worker-cpu:kind"


def test_run_script_and_workflow() -> None:
    subprocess.run(["bash", "-n", str(KIND / "run.sh")], check=True, timeout=30)
    script = (KIND / "run.sh").read_text()
    for step in ("kind create cluster", "docker build --target", "kind load docker-image", "helm upgrade --install"):
        assert step in script
    assert "--for=jsonpath='{.status.phase}'=Succeeded" in script
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "kind.yml").read_text())
    steps = workflow["jobs"]["kind"]["steps"]
    assert any("pytest tests/kind" in str(step.get("run", "")) for step in steps)
