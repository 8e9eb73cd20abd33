"""The example job manifests are valid AsyncDiffJobs."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncdiff_worker.spec import AsyncDiffJob, load_job_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "jobs").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert any(p.name == "tiny-sd.yaml" for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    job = load_job_file(path)
    assert isinstance(job, AsyncDiffJob), job
    assert job.metadata.name
