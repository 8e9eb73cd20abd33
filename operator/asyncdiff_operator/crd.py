"""Generate the AsyncDiffJob CustomResourceDefinition from the pydantic models; ``python -m asyncdiff_operator.crd``.

Why generated: the CRD's openAPIV3Schema must never drift from the models the worker and the operator validate with.
Pydantic's JSON Schema is not a Kubernetes *structural* schema, so it is rewritten here: ``$ref`` inlined, the
``anyOf: [X, null]`` of optional fields collapsed to X, ``int | str`` made ``x-kubernetes-int-or-string``,
``const`` made an enum, numeric ``exclusiveMinimum`` made the boolean form, ``dict[str, Any]`` (affinity, volumes)
made ``x-kubernetes-preserve-unknown-fields``, and keys Kubernetes rejects dropped. Cross-field rules that a
structural schema cannot say are CEL rules (``x-kubernetes-validations``), each the twin of a pydantic check: the
devices must fit the nodes and GPUs, stride 2 needs two stages, cfgParallel needs guidance, ``metadata.name`` fits
the children's names (``children.name_problem``), the job's own cross-field rules (prompts xor promptsFrom, output
scheme and format, which inputs a family takes: ``asyncdiff_worker.spec.rules``, the same rules ``asyncdiff run``
checks), and the spec is immutable once the operator started the job (``status.attempts > 0``), except
``runPolicy.suspend`` and ``parallelism.replicas`` (the child Job's parallelism follows it). The immutability rule
is generated from the models' fields, so a new field is covered.
The output is checked in at ``crds/asyncdiff.io_asyncdiffjobs.yaml``; a test fails when it differs.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from asyncdiff.families import FAMILIES
from asyncdiff_worker.spec import ParallelismSpec
from asyncdiff_worker.spec.models import UNBATCHABLE_FAMILIES, GenerationSpec
from asyncdiff_worker.spec.rules import RULES

from asyncdiff_operator.api import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, AsyncDiffJobSpec, RunPolicy
from asyncdiff_operator.children import DNS_LABEL, MAX_NAME_LENGTH

_PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / f"{GROUP}_{PLURAL}.yaml"
_KEEP = frozenset(
    {
        "type",
        "description",
        "properties",
        "items",
        "required",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "multipleOf",
        "default",
        "format",
        "additionalProperties",
        "nullable",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations",
    }
)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged: dict[str, Any] = copy.deepcopy(defs[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON Schema node as a Kubernetes structural schema node."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        options = [_resolve(o, defs) for o in node["anyOf"]]
        non_null = [o for o in options if o.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        if len(non_null) == 1:
            node = {**non_null[0], **outer}
        elif {o.get("type") for o in non_null} == {"integer", "string"}:
            node = {**outer, "x-kubernetes-int-or-string": True}
        else:  # pragma: no cover - a model change the CRD cannot express
            raise ValueError(f"cannot make a structural schema of anyOf {options}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and value is None:
            continue
        elif key == "properties":
            out[key] = {name: structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out[key] = structural(value, defs)
            elif value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif key in _KEEP:
            out[key] = value
    return out


_P = "self.parallelism"
_CFG = f"(has({_P}.cfgParallel) && {_P}.cfgParallel)"
_N = f"(has({_P}.modelN) ? {_P}.modelN : {ParallelismSpec().model_n})"  # no schema defaults: the planner's fields
_S = f"(has({_P}.stride) ? {_P}.stride : {ParallelismSpec().stride})"
_DEVICES = f"(has({_P}) ? ({_N} + {_S} - 1) * ({_CFG} ? 2 : 1) : {ParallelismSpec().devices_per_group})"
"""CEL for ``JobSpec.devices_per_group``: (modelN + stride - 1) x (2 if cfgParallel); the same formula as pydantic."""
_GUIDED = ", ".join(f"'{name}'" for name, family in FAMILIES.items() if family.guidance is not None)
_UNBATCHABLE = ", ".join(f"'{name}'" for name in UNBATCHABLE_FAMILIES)
_DEFAULT_GUIDANCE = float(GenerationSpec.model_fields["guidance_scale"].default)


def spec_rules() -> list[dict[str, str]]:
    """CEL rules on ``spec``, each the twin of a pydantic check: the job's devices ((modelN + stride - 1) x (2 if
    cfgParallel)) fit numNodes and gpusPerNode; stride 2 needs modelN >= 2; cfgParallel needs a family with guidance
    and guidanceScale > 1; batchSize > 1 only where batching reproduces one call per seed; then the job's
    cross-field rules (``asyncdiff_worker.spec.rules``)."""
    guidance = f"(has(self.generation.guidanceScale) ? double(self.generation.guidanceScale) : {_DEFAULT_GUIDANCE})"
    return [
        {
            "rule": f"!has(self.runPolicy) || {_DEVICES} % self.runPolicy.numNodes == 0",
            "fieldPath": ".runPolicy.numNodes",
            "message": "runPolicy.numNodes must divide the job's devices "
            "((parallelism.modelN + stride - 1) x (2 if cfgParallel))",
        },
        {
            "rule": "!has(self.runPolicy) || !has(self.runPolicy.gpusPerNode) || self.runPolicy.gpusPerNode == 0 || "
            f"(has({_P}) && has({_P}.devices)) || self.runPolicy.gpusPerNode * self.runPolicy.numNodes == {_DEVICES}",
            "fieldPath": ".runPolicy.gpusPerNode",
            "message": "runPolicy.gpusPerNode x runPolicy.numNodes must equal the job's devices "
            "((parallelism.modelN + stride - 1) x (2 if cfgParallel)), or gpusPerNode must be 0 (CPU-only pods)",
        },
        {
            "rule": f"!has({_P}) || !has({_P}.modelN) || !has({_P}.stride) || {_P}.modelN > 1 || {_P}.stride == 1",
            "fieldPath": ".parallelism.stride",
            "message": "parallelism.stride 2 needs modelN >= 2: use stride 1 with modelN 1",
        },
        {
            "rule": f"!has({_P}) || !{_CFG} || self.model.family in [{_GUIDED}]",
            "fieldPath": ".parallelism.cfgParallel",
            "message": "parallelism.cfgParallel needs a family with classifier-free guidance: set cfgParallel false",
        },
        {
            "rule": "!has(self.generation.batchSize) || self.generation.batchSize == 1 || "
            f"!(self.model.family in [{_UNBATCHABLE}])",
            "fieldPath": ".generation.batchSize",
            "message": "generation.batchSize > 1 is not supported for "
            + ", ".join(UNBATCHABLE_FAMILIES)
            + " (their pipelines share one generator's noise across a batch): use batchSize 1",
        },
        {
            "rule": f"!has({_P}) || !{_CFG} || {guidance} > 1.0",
            "fieldPath": ".parallelism.cfgParallel",
            "message": "parallelism.cfgParallel needs generation.guidanceScale > 1 (with guidance off there is no "
            "unconditional half): raise guidanceScale or set cfgParallel false",
        },
        *(rule.as_validation() for rule in RULES),
    ]


def batch_rules() -> list[dict[str, str]]:
    """CEL rules of batch jobs: a multi-node job is one generation group (replicas 1, no planner); with the planner
    (parallelism.devices) each pod's GPUs follow the planned group, so gpusPerNode is left out (or 0: CPU-only)."""
    multi_node = "has(self.runPolicy) && has(self.runPolicy.numNodes) && self.runPolicy.numNodes > 1"
    planned = f"has({_P}) && has({_P}.devices)"
    return [
        {
            "rule": f"!({multi_node}) || !({planned})",
            "fieldPath": ".parallelism.devices",
            "message": "parallelism.devices (the planner) needs runPolicy.numNodes 1: give a multi-node job an "
            "explicit modelN and stride instead",
        },
        {
            "rule": f"!({planned}) || !has(self.runPolicy) || !has(self.runPolicy.gpusPerNode) || "
            "self.runPolicy.gpusPerNode == 0",
            "fieldPath": ".runPolicy.gpusPerNode",
            "message": "runPolicy.gpusPerNode must be left out (or 0 for CPU-only pods) with parallelism.devices: "
            "each pod gets the GPUs of one planned group",
        },
        {
            "rule": f"!({multi_node}) || !has(self.parallelism) || !has(self.parallelism.replicas) || "
            "self.parallelism.replicas == 1",
            "fieldPath": ".parallelism.replicas",
            "message": "parallelism.replicas must be 1 when runPolicy.numNodes > 1 (a multi-node job is one "
            "generation group; each replica is one pod)",
        },
    ]


def _same(field: str) -> str:
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    return f"(has({new}) ? has({old}) && {new} == {old} : !has({old}))"


def _policy_value(side: str, field: str, default: Any, parent: str = "runPolicy") -> str:
    value = f"{side}.spec.{parent}.{field}"
    return f"(has({side}.spec.{parent}) && has({value}) ? {value} : {default})"


MUTABLE_PARALLELISM = frozenset({"replicas"})
"""``spec.parallelism`` fields that may change while the job runs: the child Job's parallelism follows them."""


def _parallelism_parts() -> list[str]:
    """Every parallelism field except the mutable ones, compared by effective value (defaults filled in)."""
    parts = []
    for name, info in ParallelismSpec.model_fields.items():
        alias = info.alias or name
        if alias in MUTABLE_PARALLELISM:
            continue
        if info.default is None or info.default.__class__ not in (int, bool, str):
            parts.append(_same_nested("parallelism", alias))
            continue
        default = _cel_literal(info.default)
        parts.append(
            f"{_policy_value('self', alias, default, 'parallelism')} == "
            f"{_policy_value('oldSelf', alias, default, 'parallelism')}"
        )
    return parts


def _same_nested(parent: str, field: str) -> str:
    new, old = f"self.spec.{parent}", f"oldSelf.spec.{parent}"
    has_new, has_old = f"(has({new}) && has({new}.{field}))", f"(has({old}) && has({old}.{field}))"
    return f"({has_new} ? {has_old} && {new}.{field} == {old}.{field} : !{has_old})"


def _cel_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def immutability_rule() -> dict[str, str]:
    """A transition rule at the root: once ``status.attempts > 0`` every spec field except runPolicy.suspend is
    fixed. runPolicy fields compare by effective value (defaults filled in), so adding ``runPolicy: {suspend: true}``
    to a job that had no runPolicy is allowed."""
    parts = []
    for name, info in AsyncDiffJobSpec.model_fields.items():
        alias = info.alias or name
        if alias == "parallelism":
            parts.extend(_parallelism_parts())
        elif alias != "runPolicy":
            parts.append(_same(alias))
    for name, info in RunPolicy.model_fields.items():
        alias = info.alias or name
        if alias == "suspend":
            continue
        default = -1 if info.default is None else info.default
        parts.append(f"{_policy_value('self', alias, default)} == {_policy_value('oldSelf', alias, default)}")
    started = "has(oldSelf.status) && has(oldSelf.status.attempts) && oldSelf.status.attempts > 0"
    return {
        "rule": f"!({started}) || ({' && '.join(parts)})",
        "fieldPath": ".spec",
        "message": "spec is immutable once the job has started (status.attempts > 0), except "
        "spec.runPolicy.suspend and spec.parallelism.replicas",
    }


def name_rules() -> list[dict[str, str]]:
    """CEL rules on ``metadata.name`` (the only metadata a root rule may read): the children's names must fit
    (``children.MAX_NAME_LENGTH``), and multi-node jobs need a DNS label (``children.DNS_LABEL``)."""
    multi = "has(self.spec.runPolicy) && has(self.spec.runPolicy.numNodes) && self.spec.runPolicy.numNodes > 1"
    return [
        {
            "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            "message": f"metadata.name may be at most {MAX_NAME_LENGTH} characters: the operator names children "
            "<name>-attempt-<n>, and Kubernetes limits those names to 63",
        },
        {
            "rule": f"!({multi}) || self.metadata.name.matches('{DNS_LABEL}')",
            "message": "metadata.name must be a DNS label (lowercase letters, digits and '-', starting with a letter) "
            "when runPolicy.numNodes > 1: it names the headless Service and the pods' hostnames",
        },
    ]


OPERATOR_DEFAULTED: tuple[tuple[str, ...], ...] = (("output", "forcePathStyle"),)
"""Fields the operator fills from its own settings when the job leaves them unset (``children.worker_job_spec``):
the CRD must not default them, or the API server's default would look like the user's choice and hide the chart's
setting (e.g. ``s3.forcePathStyle: true`` for MinIO)."""


def spec_schema() -> dict[str, Any]:
    """The openAPIV3Schema of ``spec``."""
    raw = AsyncDiffJobSpec.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    out = structural(raw, defs)
    for path in OPERATOR_DEFAULTED:
        node = out
        for key in path:
            node = node["properties"][key]
        node.pop("default", None)
    out["x-kubernetes-validations"] = spec_rules() + batch_rules()
    return out


def _obj(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _int(description: str) -> dict[str, Any]:
    return {"type": "integer", "description": description}


def status_schema() -> dict[str, Any]:
    """``status``, written only by the operator (``status.py``); typed, so a wrong write is caught in tests."""
    condition = _obj(
        "A metav1.Condition.",
        {
            "type": _str("Condition type: Created, Running, Suspended, Succeeded, Failed, Reconciled."),
            "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": _str("CamelCase reason (asyncdiff_operator.reasons)."),
            "message": _str("Human-readable detail."),
            "observedGeneration": _int("The generation this condition was set for."),
            "lastTransitionTime": _str("When status last changed.", format="date-time"),
        },
        required=["type", "status"],
    )
    progress = _obj(
        "The worker's last progress line.",
        {
            "outputsDone": _int("Outputs stored."),
            "outputsTotal": _int("Outputs of the job."),
            "step": _int("Denoising step of the current output."),
            "steps": _int("Steps per output."),
            "summary": _str("done/total, for the Progress column."),
            "lastProgressTs": {"type": "number", "description": "Unix time of the worker's last real progress."},
            "inFlight": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Sharded jobs: outputs done in each running shard at its last sample (shard -> count).",
            },
            "outputsPerMinute": {"type": "number", "description": "Recent rate (outputs per minute)."},
            "etaSeconds": _int("Estimated seconds to the last output."),
            "eta": _str("The estimate, for the ETA column (45s, 3m10s, 2h05m; - when unknown)."),
            "rateAnchorTs": {"type": "number", "description": "Start of the rate window (Unix time)."},
            "rateAnchorDone": _int("Outputs done at the start of the rate window."),
        },
    )
    layout = _obj(
        "What runs: groups of devices over shards (single-node jobs).",
        {
            "modelN": _int("Denoiser stages per group."),
            "stride": _int("Stride."),
            "cfgParallel": {"type": "boolean", "description": "Whether each group splits classifier-free guidance."},
            "replicas": _int("Groups asked for (spec.parallelism.replicas or the planner's)."),
            "groups": _int("Groups run at once: replicas clamped to the shards (the child Job's parallelism)."),
            "devicesPerGroup": _int("Processes (GPUs) per group: modelN + stride - 1."),
            "devicesTotal": _int("groups x devicesPerGroup."),
            "shards": _int("Shards (the child Job's completions)."),
            "shardSize": _int("Outputs per shard (the last may hold fewer)."),
            "plannedReplicas": _int("The replicas the shards were planned for when the child Job was made."),
            "summary": _str("groups x devicesPerGroup, for the Layout column."),
            "reason": _str("Why the planner chose this layout (spec.parallelism.devices and goal)."),
            "note": _str("Adjustments, e.g. replicas clamped to the number of shards."),
        },
    )
    shards = _obj(
        "Shards of a single-node job, from its child Job's status.",
        {
            "total": _int("Shards."),
            "completed": _int("Shards finished."),
            "failed": _int("Shards that used up their retries."),
            "active": _int("Pods running now."),
            "completedIndexes": _str("The finished shards, as the Job lists them (0-3,5)."),
        },
    )
    failure = _obj(
        "The last failed attempt.",
        {
            "reason": _str("CamelCase reason (the worker's exit code reason, Stalled, DeadlineExceeded...)."),
            "message": _str("The worker's termination message or the operator's explanation."),
            "exitCode": _int("The worker's exit code, when it exited."),
            "attempt": _int("The attempt that failed."),
        },
    )
    output = _obj(
        "Where the worker writes, resolved with the operator's S3 defaults (never credentials).",
        {
            "uri": _str("s3://bucket/prefix or file:///dir; outputs under <uri>/<job name>/."),
            "endpointUrl": _str("S3-compatible endpoint the worker uses."),
            "region": _str("S3 region."),
            "forcePathStyle": {"type": "boolean", "description": "Path-style S3 addressing."},
        },
    )
    return _obj(
        "Written by the operator.",
        {
            "phase": _str("Pending, Queued, Running, Suspended, Succeeded or Failed.", enum=list(_PHASES)),
            "conditions": {"type": "array", "items": condition, "description": "metav1.Conditions."},
            "observedGeneration": _int("The generation the operator last acted on."),
            "attempts": _int("Attempts created (each is one child Job)."),
            "failedAttempts": _int("Failed attempts counted against backoffLimit (disruptions are not)."),
            "child": _str("The current attempt's Job and ConfigMap name."),
            "devices": _int("Worker processes of the job in total (groups x devices per group)."),
            "layout": layout,
            "shards": shards,
            "failedPods": _int("Pod failures the child Job counted (each retried its shard alone)."),
            "stalls": _int("Stalled pods deleted (counted against backoffLimit)."),
            "progress": progress,
            "outputs": {"type": "array", "items": {"type": "string"}, "maxItems": 50, "description": "Output URIs."},
            "manifest": _str("URI of the result manifest (written last: the commit marker)."),
            "output": output,
            "startTime": _str("When the current run started (reset on resume).", format="date-time"),
            "completionTime": _str("When the job finished.", format="date-time"),
            "lastFailure": failure,
            "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "description": "kopf's own."},
        },
    )


def build_crd() -> dict[str, Any]:
    """The whole CRD object."""
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
        {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.family"},
        {"name": "Layout", "type": "string", "jsonPath": ".status.layout.summary", "description": "groups x devices"},
        {"name": "Devices", "type": "integer", "jsonPath": ".status.devices"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An AsyncDiff diffusion inference job run by the asyncdiff operator.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": [immutability_rule(), *name_rules()],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    """The CRD as the YAML text that is checked in."""
    header = "# Generated by `python -m asyncdiff_operator.crd` from asyncdiff_operator.api; do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) the AsyncDiffJob CRD.")
    parser.add_argument("--output", type=Path, default=CRD_FILE)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python -m asyncdiff_operator.crd", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
