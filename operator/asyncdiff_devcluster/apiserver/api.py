"""The API semantics every client and controller goes through: create, read, update, patch, delete.

Why one object: HTTP handlers, the controllers and the kubelet all call ``Api`` (never the ``Store``
directly), so server-set metadata (uid, resourceVersion, generation, creationTimestamp), status
subresource isolation, optimistic concurrency, finalizers, graceful Pod deletion, CR schema checks and
per-kind admission apply to every writer alike, exactly as they would in front of etcd.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import datetime as dt
import json
import random
import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    stale,
    unsupported_media_type,
)
from . import admission, fieldmanager, patch, schema
from .resources import ResourceRegistry, ResourceType
from .selectors import object_predicate
from .store import Store

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY_YAML = "application/apply-patch+yaml"
APPLY_CBOR = "application/apply-patch+cbor"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_KINDS = frozenset({"namespaces", "services"})
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339(offset_s: float = 0.0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


@dataclass
class WriteResult:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(n))


class Api:
    """Kubernetes object semantics over a ``Store``."""

    def __init__(self, store: Store, resources: ResourceRegistry) -> None:
        self.store = store
        self.resources = resources
        self.cluster_ips: set[str] = set()
        self.crd_hooks: list[Any] = []  # callables(crd_obj, deleted: bool) -> None, run after CRD writes
        self._event_names: dict[tuple[Any, ...], str] = {}  # record_event's correlation key -> Event name

    # ------------------------------------------------------------------ helpers

    def output(self, rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a stored object as seen through ``rt`` (its version's apiVersion)."""
        out = copy.deepcopy(dict(obj))
        out["apiVersion"] = rt.group_version
        out["kind"] = rt.kind
        return out

    def _check_namespace(self, rt: ResourceType, namespace: str) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request("the server could not find the requested resource: a namespace is required")
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp") and rt.plural != "events":
            raise forbidden(
                f'{rt.plural} "{namespace}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                plural=rt.plural,
                group=rt.group,
            )

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        limit = 63 if rt.plural in _LABEL_NAME_KINDS else 253
        pattern_ok = bool(_NAME_RE.match(name))
        if rt.plural in _LABEL_NAME_KINDS and "." in name:
            pattern_ok = False
        if not pattern_ok or len(name) > limit:
            detail = (
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character"
            )
            raise invalid(rt.kind, rt.group, name, [FieldError("FieldValueInvalid", "metadata.name", detail, name)])

    def _prepare_body(self, rt: ResourceType, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        api_version = obj.get("apiVersion")
        if api_version and api_version != rt.group_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.group_version})"
            )
        kind = obj.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        obj["apiVersion"] = rt.stored_api_version
        obj["kind"] = rt.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)
        for key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if key in meta and not meta[key]:
                del meta[key]  # Go's omitempty: empty lists/maps are not stored
        return obj

    def _schema_pass(
        self, rt: ResourceType, obj: dict[str, Any], field_validation: str, old: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        if not rt.is_custom:
            return obj, []
        result = schema.process(obj, rt.schema, old)
        name = obj.get("metadata", {}).get("name", "")
        if result.unknown_fields and field_validation == "Strict":
            fields = ", ".join(f'unknown field "{f}"' for f in result.unknown_fields)
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: {fields}'
            )
        if result.errors:
            raise invalid(rt.kind, rt.group, name, result.errors)
        warnings: list[str] = []
        if field_validation != "Ignore":
            warnings = [f'unknown field "{f}"' for f in result.unknown_fields]
        return result.obj, warnings

    def _get_stored(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    # ------------------------------------------------------------------ reads

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        return self.output(rt, self._get_stored(rt, namespace, name))

    def try_get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        return self.output(rt, obj) if obj is not None else None

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        predicate = object_predicate(label_selector, field_selector)
        items = [o for o in self.store.items(rt.storage_key, namespace or None) if predicate(o)]
        start = 0
        if continue_token:
            try:
                start = int(continue_token)
            except ValueError:
                raise bad_request("invalid continue token") from None
        meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if limit and limit > 0:
            page = items[start : start + limit]
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
        else:
            page = items[start:]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.group_version,
            "metadata": meta,
            "items": [self.output(rt, o) for o in page],
        }

    # ------------------------------------------------------------------ create

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str = "",
        field_manager: str | None = None,
        apply_manager: str | None = None,
    ) -> WriteResult:
        if "create" not in rt.verbs:
            raise ApiError(405, "MethodNotAllowed", f"create is not supported on {rt.plural}")
        obj = self._prepare_body(rt, namespace, body)
        meta = obj["metadata"]
        if rt.plural == "selfsubjectaccessreviews":  # a virtual create: answered, never stored, no name needed
            admission.on_create(self, rt, obj)
            return WriteResult(self.output(rt, obj), [], created=True)
        if not meta.get("name"):
            if meta.get("generateName"):
                for _ in range(10):
                    meta["name"] = f"{meta['generateName']}{random_suffix()}"
                    if self.store.get(rt.storage_key, namespace if rt.namespaced else "", meta["name"]) is None:
                        break
            else:
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        FieldError(
                            "FieldValueRequired",
                            "metadata.name",
                            "name or generateName is required",
                            has_value=False,
                        )
                    ],
                )
        name = meta["name"]
        self._validate_name(rt, name)
        if rt.plural != "namespaces":
            self._check_namespace(rt, namespace)
        if self.store.get(rt.storage_key, namespace if rt.namespaced else "", name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if "status" in rt.subresources:
            obj.pop("status", None)
        obj, warnings = self._schema_pass(rt, obj, field_validation)
        warnings += admission.on_create(self, rt, obj)
        if apply_manager is not None:
            applied = fieldmanager.apply({}, obj, apply_manager, custom=rt.is_custom, force=True, merge=_second)
            obj["metadata"]["managedFields"] = applied["metadata"].get("managedFields", [])
        else:
            fieldmanager.record_update(None, obj, field_manager, custom=rt.is_custom)
        if dry_run:
            return WriteResult(self.output(rt, obj), warnings, created=True)
        stored = self.store.put(rt.storage_key, obj)
        self._after_write(rt, stored, deleted=False)
        return WriteResult(self.output(rt, stored), warnings, created=True)

    # ------------------------------------------------------------------ update / patch

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "",
        require_rv: bool | None = None,
        field_manager: str | None = None,
    ) -> WriteResult:
        existing = self._get_stored(rt, namespace, name)
        obj = self._prepare_body(rt, namespace, body)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        meta["name"] = name
        rv = meta.get("resourceVersion")
        if rv:
            if str(rv) != existing["metadata"]["resourceVersion"]:
                raise stale(rt.plural, rt.group, name)
        elif (require_rv if require_rv is not None else rt.is_custom) and subresource is None:
            raise invalid(
                rt.kind,
                rt.group,
                name,
                [
                    FieldError(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "must be specified for an update",
                        "0x0",
                    )
                ],
            )
        return self._write_update(rt, existing, obj, subresource, dry_run, field_validation, field_manager)

    def _write_update(
        self,
        rt: ResourceType,
        existing: dict[str, Any],
        obj: dict[str, Any],
        subresource: str | None,
        dry_run: bool,
        field_validation: str,
        field_manager: str | None = None,
        managed: builtins.list[dict[str, Any]] | None = None,
    ) -> WriteResult:
        """``managed``: the managedFields an apply computed; otherwise ``field_manager``'s changes are recorded."""
        old_meta = existing["metadata"]
        name = old_meta["name"]
        if subresource == "status":
            new = copy.deepcopy(existing)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            if rt.plural == "pods":
                # the kubelet may also update pod conditions/labels through status; keep metadata stable
                pass
        else:
            new = obj
            meta = new["metadata"]
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta["generation"] = old_meta.get("generation", 1)
            if "status" in rt.subresources:
                if "status" in existing:
                    new["status"] = copy.deepcopy(existing["status"])
                else:
                    new.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise invalid(
                        rt.kind,
                        rt.group,
                        name,
                        [
                            FieldError(
                                "FieldValueForbidden",
                                "metadata.finalizers",
                                "no new finalizers can be added if the object is being deleted",
                                has_value=False,
                            )
                        ],
                    )
        new, warnings = self._schema_pass(rt, new, field_validation, existing)
        warnings += admission.on_update(self, rt, new, existing, subresource)
        if managed is not None:
            new["metadata"]["managedFields"] = managed
            if not managed:
                del new["metadata"]["managedFields"]
        else:
            if "managedFields" in old_meta:
                new["metadata"]["managedFields"] = copy.deepcopy(old_meta["managedFields"])
            fieldmanager.record_update(existing, new, field_manager, custom=rt.is_custom, subresource=subresource)
        if subresource is None and _spec_part(new) != _spec_part(existing):
            new["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if new == existing:
            return WriteResult(self.output(rt, existing), warnings)
        if dry_run:
            return WriteResult(self.output(rt, new), warnings)
        if (
            new["metadata"].get("deletionTimestamp")
            and not new["metadata"].get("finalizers")
            and not self._graceful_pending(rt, new)
        ):
            self.store.put(rt.storage_key, new)
            final = self.store.remove(rt.storage_key, new["metadata"].get("namespace", ""), name)
            assert final is not None
            self._after_write(rt, final, deleted=True)
            return WriteResult(self.output(rt, final), warnings)
        stored = self.store.put(rt.storage_key, new)
        self._after_write(rt, stored, deleted=False)
        return WriteResult(self.output(rt, stored), warnings)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes | Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "",
        force: bool = False,
        field_manager: str | None = None,
    ) -> WriteResult:
        ctype = content_type.split(";")[0].strip()
        if ctype in (APPLY_YAML, APPLY_CBOR):
            if not field_manager:
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [FieldError("FieldValueRequired", "fieldManager", "is required for apply patch", has_value=False)],
                )
            return self._apply(rt, namespace, name, body, subresource, dry_run, field_validation, field_manager, force)
        payload = _decode(body)
        existing = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        if existing is None:
            raise not_found(rt.plural, rt.group, name)
        current = self.output(rt, existing)
        if ctype == MERGE or ctype == "application/json":
            patched = patch.merge_patch(current, payload)
        elif ctype == JSON_PATCH:
            patched = patch.json_patch(current, payload)
        elif ctype == STRATEGIC:
            if rt.is_custom:
                raise unsupported_media_type(
                    f"the body of the request was in an unknown format - accepted media types include: "
                    f"{JSON_PATCH}, {MERGE}, {APPLY_YAML}"
                )
            patched = patch.strategic_merge_patch(current, payload)
        else:
            raise unsupported_media_type(f"unsupported patch type {ctype!r}")
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if patched_rv and str(patched_rv) != existing["metadata"]["resourceVersion"]:
            raise stale(rt.plural, rt.group, name)
        obj = self._prepare_body(rt, namespace, patched)
        obj["metadata"]["name"] = name
        return self._write_update(rt, existing, obj, subresource, dry_run, field_validation, field_manager)

    def _apply(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: bytes | Any,
        subresource: str | None,
        dry_run: bool,
        field_validation: str,
        manager: str,
        force: bool,
    ) -> WriteResult:
        """Server-side apply with field ownership (``fieldmanager.apply``): create when absent, else merge the
        config (strategic for built-ins, JSON merge for CRs), remove what this manager dropped, 409 on conflicts."""
        if isinstance(body, bytes | str):
            try:
                payload = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise bad_request(f"error decoding YAML: {exc}") from None
        else:
            payload = body
        if not isinstance(payload, dict):
            raise bad_request("apply patch must be an object")
        meta = payload.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta and meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        existing = self.store.get(rt.storage_key, namespace if rt.namespaced else "", name)
        if existing is None:
            if subresource:
                raise not_found(rt.plural, rt.group, name)
            payload.setdefault("metadata", {})["name"] = name
            return self.create(
                rt, namespace, payload, dry_run=dry_run, field_validation=field_validation, apply_manager=manager
            )
        current = self.output(rt, existing)
        config = copy.deepcopy(payload)
        config.setdefault("apiVersion", rt.group_version)
        for key in ("resourceVersion", "managedFields", "uid", "creationTimestamp", "generation", "name", "namespace"):
            (config.get("metadata") or {}).pop(key, None)
        if (payload.get("metadata") or {}).get("resourceVersion") not in (
            None,
            "",
            existing["metadata"]["resourceVersion"],
        ):
            raise stale(rt.plural, rt.group, name)

        def merge(live: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
            cfg = {k: v for k, v in cfg.items() if k not in ("apiVersion", "kind")}
            if rt.is_custom:
                return dict(patch.merge_patch(live, cfg))
            return dict(patch.strategic_merge_patch(live, cfg))

        merged = fieldmanager.apply(
            current,
            config,
            manager,
            custom=rt.is_custom,
            force=force,
            merge=merge,
            subresource=subresource,
            plural=rt.plural,
            group=rt.group,
        )
        managed = merged["metadata"].pop("managedFields", [])
        obj = self._prepare_body(rt, namespace, merged)
        obj["metadata"]["name"] = name
        return self._write_update(rt, existing, obj, subresource, dry_run, field_validation, managed=managed)

    # ------------------------------------------------------------------ delete

    def _graceful_pending(self, rt: ResourceType, obj: Mapping[str, Any]) -> bool:
        """A Pod on a node stays until the kubelet confirms its containers are stopped."""
        if rt.plural == "namespaces":
            return bool(obj.get("spec", {}).get("finalizers"))
        if rt.plural != "pods" or rt.group:
            return False
        meta = obj["metadata"]
        if not obj.get("spec", {}).get("nodeName"):
            return False
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return False
        return bool(meta.get("deletionGracePeriodSeconds", 0) or 0) > 0

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        options = options or {}
        existing = self._get_stored(rt, namespace, name)
        meta = existing["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta.get("resourceVersion"):
            raise conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            # batch/v1 Jobs keep the legacy default of orphaning their Pods, as in kube-apiserver
            policy = "Orphan" if (rt.group, rt.plural) == ("batch", "jobs") else "Background"
        new = copy.deepcopy(existing)
        nmeta = new["metadata"]
        finalizers = list(nmeta.get("finalizers") or [])
        if (
            policy == "Foreground" and "foregroundDeletion" not in finalizers and not nmeta.get("deletionTimestamp")
        ) and self.store.dependents(meta.get("uid", "")):
            finalizers.append("foregroundDeletion")
        orphan = policy == "Orphan" and "orphan" not in finalizers and not nmeta.get("deletionTimestamp")
        if orphan and self.store.dependents(meta.get("uid", "")):
            finalizers.append("orphan")
        if finalizers:
            nmeta["finalizers"] = finalizers
        grace = options.get("gracePeriodSeconds")
        if rt.plural == "pods" and not rt.group:
            if grace is None:
                grace = new.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            current = nmeta.get("deletionGracePeriodSeconds")
            if current is None or int(grace) < int(current):
                nmeta["deletionGracePeriodSeconds"] = int(grace)
        if rt.plural == "namespaces" and not rt.group:
            new.setdefault("status", {})["phase"] = "Terminating"
        if not nmeta.get("deletionTimestamp"):
            nmeta["deletionTimestamp"] = now_rfc3339(float(nmeta.get("deletionGracePeriodSeconds") or 0))
        if dry_run:
            return self.output(rt, new)
        if finalizers or self._graceful_pending(rt, new):
            if new != existing:
                stored = self.store.put(rt.storage_key, new)
                self._after_write(rt, stored, deleted=False)
                return self.output(rt, stored)
            return self.output(rt, existing)
        final = self.store.remove(rt.storage_key, namespace if rt.namespaced else "", name)
        assert final is not None
        final = dict(final)
        final["metadata"] = {**final["metadata"], "deletionTimestamp": nmeta["deletionTimestamp"]}
        self._after_write(rt, final, deleted=True)
        return self.output(rt, final)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        options: Mapping[str, Any] | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        listed = self.list(rt, namespace, label_selector=label_selector, field_selector=field_selector)
        items = []
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                items.append(self.delete(rt, meta.get("namespace", ""), meta["name"], options, dry_run=dry_run))
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return {"kind": rt.list_kind, "apiVersion": rt.group_version, "metadata": {}, "items": items}

    # ------------------------------------------------------------------ hooks

    def _after_write(self, rt: ResourceType, obj: dict[str, Any], *, deleted: bool) -> None:
        if (rt.group, rt.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            for hook in self.crd_hooks:
                hook(obj, deleted)

    # ------------------------------------------------------------------ conveniences for controllers

    def rt(self, api_version: str, plural: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        found = self.resources.get(group, version, plural)
        if found is None:
            raise not_found(plural, group, "")
        return found

    def record_event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        component: str = "devcluster",
    ) -> None:
        """Create a core/v1 Event about ``involved`` (best effort, as in client-go's recorder). Like client-go's
        EventCorrelator, the same event again (same object, reason, message, type and source) increments the
        existing Event's ``count`` and ``lastTimestamp`` instead of adding one more (``kubectl describe`` then
        shows ``(x4 over 12s)``)."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("uid") or meta.get("name"), reason, message, type_, component)
        seen = self._event_names
        existing = self.store.get(("", "events"), namespace, seen[key]) if key in seen else None
        if existing is not None:
            fresh = copy.deepcopy(existing)
            fresh["count"] = int(fresh.get("count") or 1) + 1
            fresh["lastTimestamp"] = now_rfc3339()
            with contextlib.suppress(ApiError):
                self.update(self.rt("v1", "events"), namespace, existing["metadata"]["name"], fresh)
                return
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "firstTimestamp": now_rfc3339(),
            "lastTimestamp": now_rfc3339(),
            "count": 1,
        }
        with contextlib.suppress(ApiError):
            created = self.create(self.rt("v1", "events"), namespace, body).obj
            seen[key] = created["metadata"]["name"]


def _second(_first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(second)


def _spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _decode(body: bytes | Any) -> Any:
    if isinstance(body, bytes | str):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise bad_request(f"error decoding patch: {exc}") from None
    return body


def ascii_lower(text: str) -> str:
    return "".join(c for c in text.lower() if c in string.ascii_lowercase + string.digits + "-")
