"""The three PATCH flavours Kubernetes clients send: JSON merge, JSON patch and strategic merge.

Why: kopf uses merge patches and JSON patches with ``test`` ops (a failed ``test`` must be a 422, not a
500, or kopf's finalizer patch retries forever); kubectl sends strategic merge patches for built-in kinds
(``$setElementOrder``, ``$patch: delete``, lists merged by key), and stores them literally if the server
does not understand them. Strategic merge here uses a table of merge keys by field name instead of the Go
struct tags, which covers the fields kubectl touches on Pods, Jobs, Services and ConfigMaps.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ApiError, bad_request

JSON = Any


class PatchError(ApiError):
    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(code, "Invalid" if code == 422 else "BadRequest", message)


# --------------------------------------------------------------------------- JSON merge patch (RFC 7386)


def merge_patch(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------- JSON patch (RFC 6902)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: JSON, parts: list[str], op: str, path: str) -> JSON:
    cur = doc
    for part in parts:
        if isinstance(cur, dict):
            if part not in cur:
                raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path!r}")
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path!r}") from None
        else:
            raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path!r}")
    return cur


def _get(doc: JSON, path: str, op: str) -> JSON:
    return _walk(doc, _pointer(path), op, path)


def _add(doc: JSON, path: str, value: JSON, op: str = "add") -> JSON:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _walk(doc, parts[:-1], op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        else:
            try:
                index = int(last)
            except ValueError:
                raise PatchError(f"jsonpatch {op} operation does not apply: invalid index {last!r}") from None
            if index < 0 or index > len(parent):
                raise PatchError(f"jsonpatch {op} operation does not apply: index out of range: {path!r}")
            parent.insert(index, copy.deepcopy(value))
    else:
        raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path!r}")
    return doc


def _remove(doc: JSON, path: str, op: str = "remove") -> tuple[JSON, JSON]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("jsonpatch remove operation does not apply: cannot remove the root")
    parent = _walk(doc, parts[:-1], op, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing key: {path}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path}") from None
    raise PatchError(f"jsonpatch {op} operation does not apply: doc is missing path: {path!r}")


def json_patch(doc: JSON, operations: JSON) -> JSON:
    if not isinstance(operations, list):
        raise bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid json patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op == "add":
            doc = _add(doc, path, operation.get("value"))
        elif op == "remove":
            doc, _ = _remove(doc, path)
        elif op == "replace":
            _get(doc, path, "replace")
            doc, _ = _remove(doc, path, "replace") if _pointer(path) else (doc, None)
            doc = _add(doc, path, operation.get("value"), "replace")
        elif op == "move":
            doc, value = _remove(doc, operation["from"], "move")
            doc = _add(doc, path, value, "move")
        elif op == "copy":
            doc = _add(doc, path, _get(doc, operation["from"], "copy"), "copy")
        elif op == "test":
            try:
                actual = _get(doc, path, "test")
            except PatchError:
                actual = None
                if operation.get("value") is not None:
                    raise PatchError(f"testing value {path} failed: path not found") from None
            if actual != operation.get("value"):
                raise PatchError(f"testing value {path} failed: {actual!r} != {operation.get('value')!r}")
        else:
            raise bad_request(f"unknown json patch operation {op!r}")
    return doc


# --------------------------------------------------------------------------- strategic merge patch

# field name -> merge key, for lists that Kubernetes merges by key (patchStrategy=merge in the Go types).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
# Primitive lists whose strategy is "merge" (union) rather than "replace".
MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})
_DELETE = object()


def _merge_key(field_name: str, parents: tuple[str, ...]) -> str | None:
    if field_name == "ports":
        in_container = any(p in ("containers", "initContainers", "ephemeralContainers") for p in parents)
        return "containerPort" if in_container else "port"
    return MERGE_KEYS.get(field_name)


def strategic_merge_patch(original: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    result = _smp_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, ())
    return {} if result is _DELETE else result


def _smp_map(original: dict[str, Any], patch: dict[str, Any], parents: tuple[str, ...]) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        original = {k: v for k, v in original.items() if k in retain}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(original.get(field), list):
                original[field] = [v for v in original[field] if v not in value]
            continue
        if value is None:
            original.pop(key, None)
        elif isinstance(value, dict):
            current = original.get(key)
            merged = _smp_map(current if isinstance(current, dict) else {}, value, (*parents, key))
            if merged is _DELETE:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _smp_list(original.get(key), value, key, parents)
        else:
            original[key] = value
    for field, order in orders.items():
        if isinstance(original.get(field), list):
            original[field] = _apply_order(original[field], order, _merge_key(field, parents))
    return original


def _smp_list(original: Any, patch: list[Any], field: str, parents: tuple[str, ...]) -> list[Any]:
    current: list[Any] = original if isinstance(original, list) else []
    key = _merge_key(field, parents)
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [item for item in patch if not (isinstance(item, dict) and item.get("$patch") == "replace")]
    if key is None:
        if field in MERGED_PRIMITIVE_LISTS:
            return current + [v for v in patch if v not in current]
        return copy.deepcopy(patch)
    out = list(current)
    for item in patch:
        if not isinstance(item, dict):
            continue
        ident = item.get(key)
        index = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == ident), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append({k: v for k, v in item.items() if v is not None})
        else:
            merged = _smp_map(out[index], item, (*parents, field))
            if merged is _DELETE:
                out.pop(index)
            else:
                out[index] = merged
    return out


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    wanted = [ident(o) for o in order]
    listed = [i for i in items if ident(i) in wanted]
    listed.sort(key=lambda i: wanted.index(ident(i)))
    rest = [i for i in items if ident(i) not in wanted]
    return listed + rest
