"""The job spec of an AsyncDiffJob: pydantic models, limits, URI parsing and validation.

Why a package importable without torch, diffusers or boto3: the operator imports it to generate the CRD schema and to
validate jobs, and it has none of those installed.
"""

from asyncdiff_worker.spec import limits
from asyncdiff_worker.spec.models import (
    API_VERSION,
    KIND,
    AsyncDiffJob,
    GenerationSpec,
    JobMetadata,
    JobSpec,
    ModelSpec,
    OutputSpec,
    ParallelismSpec,
)
from asyncdiff_worker.spec.uris import Location, parse_location
from asyncdiff_worker.spec.validate import (
    RUN_POLICY_FIELDS,
    VIDEO_FAMILIES,
    check_semantics,
    load_job_file,
    validate_job,
    validate_job_text,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "RUN_POLICY_FIELDS",
    "VIDEO_FAMILIES",
    "AsyncDiffJob",
    "GenerationSpec",
    "JobMetadata",
    "JobSpec",
    "Location",
    "ModelSpec",
    "OutputSpec",
    "ParallelismSpec",
    "check_semantics",
    "limits",
    "load_job_file",
    "parse_location",
    "validate_job",
    "validate_job_text",
]
