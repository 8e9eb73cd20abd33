"""Generate the AsyncDiffJob CustomResourceDefinition from the pydantic models; ``python -m asyncdiff_operator.crd``.

Why generated: the CRD's openAPIV3Schema must never drift from the models the worker and the operator validate with.
Pydantic's JSON Schema is not a Kubernetes *structural* schema, so it is rewritten here: ``$ref`` inlined, the
``anyOf: [X, null]`` of optional fields collapsed to X, ``int | str`` made ``x-kubernetes-int-or-string``,
``const`` made an enum, numeric ``exclusiveMinimum`` made the boolean form, ``dict[str, Any]`` (affinity, volumes)
made ``x-kubernetes-preserve-unknown-fields``, and keys Kubernetes rejects dropped. Cross-field rules that a
structural schema cannot say are CEL rules (``x-kubernetes-validations``): the devices must fit the nodes and GPUs,
the job's own cross-field rules (prompts xor promptsFrom, output scheme and format, which inputs a family takes:
``asyncdiff_worker.spec.rules``, the same rules ``asyncdiff run`` checks), and the spec is immutable once the
operator started the job (``status.attempts > 0``), except ``runPolicy.suspend``. The immutability rule is
generated from the models' fields, so a new field is covered. The output is checked in at
``crds/asyncdiff.io_asyncdiffjobs.yaml``; a test fails when it differs.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from asyncdiff_worker.spec import ParallelismSpec
from asyncdiff_worker.spec.rules import RULES

from asyncdiff_operator.api import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, AsyncDiffJobSpec, RunPolicy

_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
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


_DEVICES = (
    f"(has(self.parallelism) ? self.parallelism.modelN + self.parallelism.stride - 1 : {ParallelismSpec().devices})"
)


def spec_rules() -> list[dict[str, str]]:
    """CEL rules on ``spec``: the job's devices (modelN + stride - 1) fit numNodes and gpusPerNode, then the job's
    cross-field rules (``asyncdiff_worker.spec.rules``)."""
    return [
        {
            "rule": f"!has(self.runPolicy) || {_DEVICES} % self.runPolicy.numNodes == 0",
            "fieldPath": ".runPolicy.numNodes",
            "message": "runPolicy.numNodes must divide the job's devices (parallelism.modelN + stride - 1)",
        },
        {
            "rule": "!has(self.runPolicy) || !has(self.runPolicy.gpusPerNode) || self.runPolicy.gpusPerNode == 0 || "
            f"self.runPolicy.gpusPerNode * self.runPolicy.numNodes == {_DEVICES}",
            "fieldPath": ".runPolicy.gpusPerNode",
            "message": "runPolicy.gpusPerNode x runPolicy.numNodes must equal the job's devices "
            "(parallelism.modelN + stride - 1), or gpusPerNode must be 0 (CPU-only pods)",
        },
        *(rule.as_validation() for rule in RULES),
    ]


def _same(field: str) -> str:
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    return f"(has({new}) ? has({old}) && {new} == {old} : !has({old}))"


def _policy_value(side: str, field: str, default: Any) -> str:
    value = f"{side}.spec.runPolicy.{field}"
    return f"(has({side}.spec.runPolicy) && has({value}) ? {value} : {default})"


def immutability_rule() -> dict[str, str]:
    """A transition rule at the root: once ``status.attempts > 0`` every spec field except runPolicy.suspend is
    fixed. runPolicy fields compare by effective value (defaults filled in), so adding ``runPolicy: {suspend: true}``
    to a job that had no runPolicy is allowed."""
    parts = []
    for name, info in AsyncDiffJobSpec.model_fields.items():
        alias = info.alias or name
        if alias != "runPolicy":
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
        "message": "spec is immutable once the job has started (status.attempts > 0), except spec.runPolicy.suspend",
    }


def spec_schema() -> dict[str, Any]:
    """The openAPIV3Schema of ``spec``."""
    raw = AsyncDiffJobSpec.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    out = structural(raw, defs)
    out["x-kubernetes-validations"] = spec_rules()
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
            "type": _str("Condition type: Created, Running, Suspended, Succeeded, Failed."),
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
    return _obj(
        "Written by the operator.",
        {
            "phase": _str("Pending, Running, Suspended, Succeeded or Failed.", enum=list(_PHASES)),
            "conditions": {"type": "array", "items": condition, "description": "metav1.Conditions."},
            "observedGeneration": _int("The generation the operator last acted on."),
            "attempts": _int("Attempts created (each is one child Job)."),
            "failedAttempts": _int("Failed attempts counted against backoffLimit (disruptions are not)."),
            "child": _str("The current attempt's Job and ConfigMap name."),
            "devices": _int("Worker processes of the job (modelN + stride - 1)."),
            "progress": progress,
            "outputs": {"type": "array", "items": {"type": "string"}, "maxItems": 50, "description": "Output URIs."},
            "manifest": _str("URI of the result manifest (written last: the commit marker)."),
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
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.family"},
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
                            "x-kubernetes-validations": [immutability_rule()],
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
