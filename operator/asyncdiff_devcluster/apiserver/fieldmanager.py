"""Server-side apply with field ownership (``metadata.managedFields``), as structured-merge-diff does it.

Why: Helm 4 installs, upgrades and rolls back with server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=helm``), and so does ``kubectl apply --server-side``. Their
results depend on ownership: a field the applier set last time and leaves out now is *removed* (a value dropped
from a chart disappears on ``helm upgrade``), a field another manager changed is a 409 conflict unless the
apply is forced (``force=true``), and ``managedFields`` records who owns what (``kubectl get -o yaml
--show-managed-fields``).

Model (from the Kubernetes server-side apply docs):
- A field set is a set of paths in the ``fieldsV1`` element encoding: ``f:<field>`` for a map key,
  ``k:{"name":"x"}`` for an item of a list merged by key (plus ``.`` for the item itself), ``v:<json>`` for an
  item of a set of scalars (``finalizers``); other lists are atomic (one leaf). Paths stop at leaves.
- ``apply``: conflicts are leaves of the applied config whose value differs from the live one and that another
  manager owns (409 listing them unless forced; forced or equal values move/share ownership). The config is
  merged into the live object (keyed lists by key for built-ins, as strategic merge does; CRs' lists atomic),
  then every leaf the applier owned before, that it leaves out now and that no other manager owns, is removed.
  The applier's entry (operation ``Apply``) becomes exactly the applied config's set.
- Every other write (create, update, patch) with a known manager (``fieldManager``, else the User-Agent's
  product name, as kube-apiserver derives it) records the leaves it changed in that manager's ``Update``
  entry and takes them from everyone else. Writes by the emulator's own controllers have no manager and
  leave ownership as it is (Kubernetes would attribute them to kube-controller-manager or the kubelet).

Approximations: one merge key per list (Kubernetes' container ``ports`` key on containerPort *and* protocol);
CR lists are atomic (``x-kubernetes-list-type`` is not read); timestamps of entries have second resolution.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ApiError
from .patch import MERGED_PRIMITIVE_LISTS, _merge_key

Path = tuple[str, ...]
# metadata fields that are part of a manager's set; the rest of metadata is the server's
OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
_SKIP_TOP = frozenset({"apiVersion", "kind", "metadata", "status"})


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_key(item: Any, key: str, field: str) -> str | None:
    if isinstance(item, dict) and key in item:
        return "k:" + json.dumps({key: item[key]}, separators=(",", ":"), sort_keys=True)
    return None


def _walk(value: Any, path: Path, parents: tuple[str, ...], custom: bool, out: set[Path]) -> None:
    if isinstance(value, dict):
        if not value:
            out.add(path)
            return
        for k, v in value.items():
            _walk(v, (*path, f"f:{k}"), (*parents, k), custom, out)
        return
    if isinstance(value, list) and not custom and parents:
        field = parents[-1]
        if field in MERGED_PRIMITIVE_LISTS:
            for item in value:
                out.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
            return
        key = _merge_key(field, parents[:-1])
        if key is not None and value and all(_item_key(i, key, field) for i in value):
            for item in value:
                ident = _item_key(item, key, field)
                assert ident is not None
                item_path = (*path, ident)
                out.add((*item_path, "."))
                _walk(item, item_path, (*parents, field), custom, out)
            return
    out.add(path)


def field_set(obj: dict[str, Any], *, custom: bool, subresource: str | None = None) -> set[Path]:
    """The leaf paths ``obj`` sets: spec-like fields (or ``status`` for the status subresource), owned metadata."""
    out: set[Path] = set()
    if subresource == "status":
        if "status" in obj:
            _walk(obj["status"], ("f:status",), ("status",), custom, out)
        return out
    meta = obj.get("metadata") or {}
    for key in OWNED_METADATA:
        if key in meta:
            _walk(meta[key], ("f:metadata", f"f:{key}"), ("metadata", key), custom, out)
    for key, value in obj.items():
        if key not in _SKIP_TOP:
            _walk(value, (f"f:{key}",), (key,), custom, out)
    return out


def _step(node: Any, element: str) -> tuple[bool, Any]:
    """Follow one path element; (found, child)."""
    if element.startswith("f:") and isinstance(node, dict):
        name = element[2:]
        return (name in node, node.get(name))
    if element.startswith("k:") and isinstance(node, list):
        want = json.loads(element[2:])
        for item in node:
            if isinstance(item, dict) and all(item.get(k) == v for k, v in want.items()):
                return True, item
        return False, None
    if element.startswith("v:") and isinstance(node, list):
        want = json.loads(element[2:])
        return (want in node, want)
    return False, None


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    node = obj
    for element in path:
        if element == ".":
            return True, node
        found, node = _step(node, element)
        if not found:
            return False, None
    return True, node


def remove_path(obj: Any, path: Path) -> None:
    """Remove the leaf (or, for a ``.`` path, the list item) at ``path``; empty parents it leaves stay."""
    if path and path[-1] == ".":
        path = path[:-1]
    if not path:
        return
    found, parent = value_at(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [i for i in parent if not (isinstance(i, dict) and all(i.get(k) == v for k, v in want.items()))]
    elif last.startswith("v:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [i for i in parent if i != want]


# --------------------------------------------------------------------------- fieldsV1 <-> path sets


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    return tree


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    if not tree and prefix:
        out.add(prefix)
    for element, child in tree.items():
        if element == ".":
            out.add((*prefix, "."))
        else:
            out |= from_fields_v1(child, (*prefix, element))
    return out


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (obj.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)]


def _same_entry(entry: dict[str, Any], manager: str, operation: str, subresource: str | None) -> bool:
    return (
        entry.get("manager") == manager
        and entry.get("operation") == operation
        and (entry.get("subresource") or None) == subresource
    )


def _set_entries(obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    kept = [e for e in entries if from_fields_v1(e.get("fieldsV1"))]
    meta = obj.setdefault("metadata", {})
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields", None)


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], subresource: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _changed(old: dict[str, Any] | None, new: dict[str, Any], custom: bool, subresource: str | None) -> set[Path]:
    new_paths = field_set(new, custom=custom, subresource=subresource)
    if old is None:
        return new_paths
    changed = set()
    for path in new_paths:
        if value_at(old, path) != value_at(new, path):
            changed.add(path)
    return changed


def _strip(entries: list[dict[str, Any]], taken: set[Path], keep: Callable[[dict[str, Any]], bool]) -> None:
    for entry in entries:
        if keep(entry):
            continue
        paths = from_fields_v1(entry.get("fieldsV1"))
        if paths & taken:
            entry["fieldsV1"] = to_fields_v1(paths - taken)


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str | None,
    *,
    custom: bool,
    subresource: str | None = None,
) -> None:
    """Attribute the leaves ``new`` changed relative to ``old`` (None: a create) to ``manager``'s Update entry."""
    entries = copy.deepcopy(_entries(old) if old is not None else _entries(new))
    if manager is None:
        _set_entries(new, entries)
        return
    changed = _changed(old, new, custom, subresource)
    # fields that disappeared are no longer anybody's
    gone = {p for e in entries for p in from_fields_v1(e.get("fieldsV1")) if not value_at(new, p)[0]}
    _strip(entries, gone, lambda e: False)
    if changed:
        _strip(entries, changed, lambda e: _same_entry(e, manager, "Update", subresource))
        mine = next((e for e in entries if _same_entry(e, manager, "Update", subresource)), None)
        if mine is None:
            entries.append(_entry(manager, "Update", new.get("apiVersion", ""), changed, subresource))
        else:
            mine["fieldsV1"] = to_fields_v1(from_fields_v1(mine.get("fieldsV1")) | changed)
            mine["time"] = now_rfc3339()
    _set_entries(new, entries)


def conflict_error(rt_plural: str, rt_group: str, name: str, conflicts: dict[str, list[Path]]) -> ApiError:
    lines = []
    causes = []
    for manager, paths in sorted(conflicts.items()):
        for path in sorted(paths):
            dotted = "." + ".".join(p[2:] if p[:2] in ("f:", "k:", "v:") else p for p in path if p != ".")
            lines.append(f'- conflict with "{manager}": {dotted}')
            causes.append({"reason": "FieldManagerConflict", "message": f'conflict with "{manager}"', "field": dotted})
    qualified = f"{rt_plural}.{rt_group}" if rt_group else rt_plural
    count = sum(len(p) for p in conflicts.values())
    message = f"Apply failed with {count} conflict{'s' if count != 1 else ''}: " + "\n".join(lines)
    return ApiError(
        409,
        "Conflict",
        message,
        details={"name": name, "group": rt_group, "kind": qualified.split(".")[0], "causes": causes},
    )


def apply(
    live: dict[str, Any],
    config: dict[str, Any],
    manager: str,
    *,
    custom: bool,
    force: bool,
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    subresource: str | None = None,
    plural: str = "",
    group: str = "",
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (both JSON objects); raises 409 on conflicts."""
    applied = field_set(config, custom=custom, subresource=subresource)
    entries = copy.deepcopy(_entries(live))
    mine = next((e for e in entries if _same_entry(e, manager, "Apply", subresource)), None)
    previous = from_fields_v1(mine.get("fieldsV1")) if mine else set()
    conflicts: dict[str, list[Path]] = {}
    for entry in entries:
        if entry is mine:
            continue
        theirs = from_fields_v1(entry.get("fieldsV1")) & applied
        for path in theirs:
            if path[-1] != "." and value_at(live, path) != value_at(config, path):
                conflicts.setdefault(str(entry.get("manager")), []).append(path)
    if conflicts and not force:
        raise conflict_error(plural, group, (live.get("metadata") or {}).get("name", ""), conflicts)
    taken = {p for paths in conflicts.values() for p in paths}
    _strip(entries, taken, lambda e: e is mine)
    merged = merge(live, config)
    others = {p for e in entries if e is not mine for p in from_fields_v1(e.get("fieldsV1"))}
    dropped = previous - applied - others
    # an item stays while another manager owns something inside it
    dropped = {p for p in dropped if p[-1] != "." or not any(o[: len(p) - 1] == p[:-1] for o in others)}
    # whole list items first (an item's key fields are leaves too), then the other leaves, deepest first
    for path in sorted(dropped, key=lambda p: (p[-1] != ".", -len(p))):
        remove_path(merged, path)
    if mine is None:
        entries.append(
            _entry(manager, "Apply", config.get("apiVersion") or live.get("apiVersion", ""), applied, subresource)
        )
    else:
        mine.update(
            _entry(manager, "Apply", config.get("apiVersion") or mine.get("apiVersion", ""), applied, subresource)
        )
    _set_entries(merged, entries)
    return merged


def manager_from(field_manager: str | None, user_agent: str | None) -> str | None:
    """The manager name kube-apiserver uses: ``fieldManager``, else the User-Agent's first product token."""
    if field_manager:
        return field_manager
    if user_agent:
        return user_agent.split("/")[0].split(" ")[0][:128] or None
    return None
