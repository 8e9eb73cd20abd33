"""Just enough OpenAPI for real kubectl to run without ``--validate=false``.

Why: kubectl >= 1.27 validates manifests by asking the server whether each kind's PATCH operation accepts
the ``fieldValidation`` query parameter (``/openapi/v3``); if it does, validation is left to the server
(which here prunes/rejects unknown fields of custom resources). Without any ``/openapi`` endpoint,
``kubectl apply`` fails with "failed to download openapi". PATCH request bodies deliberately omit
strategic-merge-patch, so kubectl computes strategic patches for built-in kinds from its own compiled-in
types instead of needing full OpenAPI models. ``/openapi/v2`` answers an empty protobuf document (a
valid, model-less spec) for clients that still fetch it.

Custom resources carry their openAPIV3Schema under ``components.schemas`` (so ``kubectl explain`` has
something to show for them); built-in kinds have no models.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import ResourceRegistry, ResourceType

_PARAMS = [
    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}},
]
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _model_name(rt: ResourceType) -> str:
    parts = list(reversed(rt.group.split("."))) if rt.group else ["io", "k8s", "api", "core"]
    return ".".join([*parts, rt.version, rt.kind])


def _operations(rt: ResourceType, ref: dict[str, Any] | None) -> dict[str, Any]:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    body_schema = ref or {"type": "object"}
    content = {t: {"schema": body_schema} for t in _PATCH_TYPES}
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": body_schema}}}}
    return {
        "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get", "responses": responses},
        "put": {
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "put",
            "parameters": _PARAMS,
            "requestBody": {"content": {"application/json": {"schema": body_schema}}},
            "responses": responses,
        },
        "patch": {
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "patch",
            "parameters": _PARAMS,
            "requestBody": {"content": content, "required": True},
            "responses": responses,
        },
        "delete": {
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "delete",
            "responses": responses,
        },
    }


def gv_document(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    prefix = "/" + _gv_path(group, version)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        ref: dict[str, Any] | None = None
        if rt.schema:
            model = dict(rt.schema)
            model["x-kubernetes-group-version-kind"] = [{"group": rt.group, "version": rt.version, "kind": rt.kind}]
            schemas[_model_name(rt)] = model
            ref = {"$ref": f"#/components/schemas/{_model_name(rt)}"}
        item = (
            f"{prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}"
            if rt.namespaced
            else f"{prefix}/{rt.plural}/{{name}}"
        )
        collection = item.rsplit("/", 1)[0]
        paths[item] = _operations(rt, ref)
        paths[collection] = {
            "get": {
                "x-kubernetes-group-version-kind": {
                    "group": rt.group,
                    "version": rt.version,
                    "kind": rt.kind,
                },
                "x-kubernetes-action": "list",
            },
            "post": {
                "x-kubernetes-group-version-kind": {
                    "group": rt.group,
                    "version": rt.version,
                    "kind": rt.kind,
                },
                "x-kubernetes-action": "post",
                "parameters": _PARAMS,
            },
        }
        if "status" in rt.subresources:
            paths[f"{item}/status"] = _operations(rt, ref)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (asyncdiff dev cluster)", "version": "v1.36.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def v3_index(registry: ResourceRegistry) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in sorted(registry.groups().items()):
        for version in versions:
            doc = gv_document(registry, group, version)
            if doc is None:
                continue
            key = _gv_path(group, version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={_digest(doc)}"}
    return {"paths": paths}


def v2_document_json() -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (asyncdiff dev cluster)", "version": "v1.36.0"},
        "paths": {},
        "definitions": {},
    }
