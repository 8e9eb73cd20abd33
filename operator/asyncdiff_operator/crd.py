"""Generate the AsyncDiffJob CustomResourceDefinition from the pydantic models; ``python -m asyncdiff_operator.crd``.

Why generated: the CRD's openAPIV3Schema must never drift from the models the worker and the operator validate with.
Pydantic's JSON Schema is not a Kubernetes *structural* schema, so it is rewritten here: ``$ref`` inlined, the
``anyOf: [X, null]`` of optional fields collapsed to X, ``int | str`` made ``x-kubernetes-int-or-string``,
``const`` made an enum, numeric ``exclusiveMinimum`` made the boolean form, and keys Kubernetes rejects dropped.
The output is checked in at ``crds/asyncdiff.io_asyncdiffjobs.yaml``; a test fails when it differs.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from asyncdiff_operator.api import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, AsyncDiffJobSpec

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
            if isinstance(value, dict):
                out[key] = structural(value, defs)
        elif key in _KEEP:
            out[key] = value
    return out


def spec_schema() -> dict[str, Any]:
    """The openAPIV3Schema of ``spec``."""
    raw = AsyncDiffJobSpec.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def status_schema() -> dict[str, Any]:
    """``status`` is written only by the operator; its fields are documented in ``status.py``."""
    return {
        "type": "object",
        "description": "Written by the operator: phase, conditions, attempts, progress, outputs, lastFailure.",
        "x-kubernetes-preserve-unknown-fields": True,
    }


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
