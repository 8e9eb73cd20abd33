"""Structural-schema processing for custom resources: prune unknown fields, apply defaults, validate.

Why: the operator's CRD carries its contract in ``openAPIV3Schema`` (required fields, enums, bounds,
defaults). A test cluster that accepts any body would let a broken manifest or a broken operator patch
pass; here a CR is processed in the API server's order (prune -> default -> validate) and errors come
back as a 422 with apimachinery-style messages, e.g.
``spec.steps: Invalid value: 500: spec.steps in body should be less than or equal to 200``.

CEL rules (``x-kubernetes-validations``) run last, on the pruned and defaulted object (``cel.py``; pass the
stored object as ``old`` on updates for transition rules). Not covered: ``format`` checks other than the basic
numeric ones, and ``x-kubernetes-embedded-resource`` metadata checks.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import FieldError
from . import cel

_ROOT_IMPLICIT = ("apiVersion", "kind", "metadata")


@dataclass
class SchemaResult:
    obj: dict[str, Any]
    errors: list[FieldError] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


def process(obj: dict[str, Any], schema: dict[str, Any] | None, old: dict[str, Any] | None = None) -> SchemaResult:
    """Prune, default and validate a whole custom resource against its version's openAPIV3Schema; then its CEL
    rules, when the schema checks passed (``old``: the stored object, on updates)."""
    result = SchemaResult(obj=copy.deepcopy(obj))
    if not schema:
        return result
    props = schema.get("properties") or {}
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    for key in list(result.obj):
        if key in _ROOT_IMPLICIT:
            continue
        if key not in props and not preserve:
            result.unknown_fields.append(key)
            del result.obj[key]
    for key, sub in props.items():
        if key in _ROOT_IMPLICIT:
            continue
        if key not in result.obj and "default" in sub:
            result.obj[key] = copy.deepcopy(sub["default"])
        if key in result.obj:
            value = result.obj[key]
            if value is None and not sub.get("nullable"):
                del result.obj[key]
                if "default" in sub:
                    result.obj[key] = copy.deepcopy(sub["default"])
                continue
            result.obj[key] = _walk(value, sub, key, result)
    for key in schema.get("required") or []:
        if key not in result.obj and key not in _ROOT_IMPLICIT:
            result.errors.append(FieldError("FieldValueRequired", key, has_value=False))
    if not result.errors:
        result.errors.extend(cel.validate(result.obj, old, schema))
    return result


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def _walk(value: Any, schema: dict[str, Any], path: str, result: SchemaResult) -> Any:
    """Prune and default ``value`` in place of its schema, then validate it. Returns the new value."""
    if value is None:
        if not schema.get("nullable"):
            result.errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f'{path} in body must be of type {schema.get("type")}: "null"',
                    None,
                )
            )
        return value
    if not _type_ok(value, schema):
        kind = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        result.errors.append(
            FieldError(
                "FieldValueTypeInvalid",
                path,
                f"{path} in body must be of type {kind}: {_json_type(value)}",
                value,
            )
        )
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        if props is not None or additional is not None or not preserve:
            for key in list(value):
                child_path = f"{path}.{key}"
                if props is not None and key in props:
                    continue
                if isinstance(additional, dict):
                    value[key] = _walk(value[key], additional, child_path, result)
                    continue
                if additional is True or preserve:
                    continue
                if props is None and additional is None and schema.get("type") != "object":
                    continue
                result.unknown_fields.append(child_path)
                del value[key]
        for key, sub in (props or {}).items():
            child_path = f"{path}.{key}"
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                if value[key] is None and not sub.get("nullable"):
                    del value[key]
                    if "default" in sub:
                        value[key] = copy.deepcopy(sub["default"])
                    continue
                value[key] = _walk(value[key], sub, child_path, result)
        for key in schema.get("required") or []:
            if key not in value:
                result.errors.append(FieldError("FieldValueRequired", f"{path}.{key}", has_value=False))
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i in range(len(value)):
                value[i] = _walk(value[i], items, f"{path}[{i}]", result)
    _validate_value(value, schema, path, result)
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return '"boolean"'
    if isinstance(value, int):
        return '"integer"'
    if isinstance(value, float):
        return '"number"'
    if isinstance(value, str):
        return '"string"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, dict):
        return '"object"'
    return '"null"'


def _validate_value(value: Any, schema: dict[str, Any], path: str, result: SchemaResult) -> None:
    errors = result.errors
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(v) for v in schema["enum"])
        errors.append(FieldError("FieldValueNotSupported", path, f"supported values: {supported}", value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in schema:
            if schema.get("exclusiveMaximum") is True and value >= schema["maximum"]:
                errors.append(_inv(path, value, f"should be less than {schema['maximum']}"))
            elif value > schema["maximum"]:
                errors.append(_inv(path, value, f"should be less than or equal to {schema['maximum']}"))
        if "minimum" in schema:
            if schema.get("exclusiveMinimum") is True and value <= schema["minimum"]:
                errors.append(_inv(path, value, f"should be greater than {schema['minimum']}"))
            elif value < schema["minimum"]:
                errors.append(_inv(path, value, f"should be greater than or equal to {schema['minimum']}"))
        multiple = schema.get("multipleOf")
        if multiple and (value / multiple) != int(value / multiple):
            errors.append(_inv(path, value, f"should be a multiple of {multiple}"))
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(FieldError("FieldValueTooLong", path, f"may not be longer than {schema['maxLength']}", value))
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(_inv(path, value, f"should be at least {schema['minLength']} chars long"))
        pattern = schema.get("pattern")
        if pattern and not re.search(pattern, value):
            errors.append(_inv(path, value, f"should match '{pattern}'"))
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                FieldError("FieldValueTooMany", path, f"must have at most {schema['maxItems']} items", len(value))
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(_inv(path, len(value), f"should have at least {schema['minItems']} items"))
        list_type = schema.get("x-kubernetes-list-type")
        if schema.get("uniqueItems") or list_type == "set":
            seen: list[Any] = []
            for item in value:
                if item in seen:
                    errors.append(FieldError("FieldValueDuplicate", path, "", item))
                seen.append(item)
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: list[tuple[Any, ...]] = []
            for i, item in enumerate(value):
                ident = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
                if ident in seen_keys:
                    errors.append(FieldError("FieldValueDuplicate", f"{path}[{i}]", "", _ident_value(keys, ident)))
                seen_keys.append(ident)
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(
                FieldError(
                    "FieldValueTooMany",
                    path,
                    f"must have at most {schema['maxProperties']} items",
                    len(value),
                )
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(_inv(path, len(value), f"should have at least {schema['minProperties']} properties"))
    for sub in schema.get("allOf") or []:
        _validate_only(value, sub, path, result)
    any_of = schema.get("anyOf")
    if any_of and not any(_passes(value, sub, path) for sub in any_of):
        errors.append(FieldError("FieldValueInvalid", path, "must validate at least one schema (anyOf)", value))
    one_of = schema.get("oneOf")
    if one_of and sum(1 for sub in one_of if _passes(value, sub, path)) != 1:
        errors.append(FieldError("FieldValueInvalid", path, "must validate one and only one schema (oneOf)", value))
    if "not" in schema and _passes(value, schema["not"], path):
        errors.append(FieldError("FieldValueInvalid", path, "must not validate the schema (not)", value))


def _ident_value(keys: list[str], ident: tuple[Any, ...]) -> Any:
    if len(keys) == 1:
        return {keys[0]: ident[0]}
    return dict(zip(keys, ident, strict=False))


def _inv(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, f"{path} in body {detail}", value)


def _quote(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _validate_only(value: Any, schema: dict[str, Any], path: str, result: SchemaResult) -> None:
    scratch = SchemaResult(obj={})
    _walk_validate(copy.deepcopy(value), schema, path, scratch)
    result.errors.extend(scratch.errors)


def _walk_validate(value: Any, schema: dict[str, Any], path: str, result: SchemaResult) -> None:
    if not _type_ok(value, schema) and value is not None:
        result.errors.append(FieldError("FieldValueTypeInvalid", path, f"must be of type {schema.get('type')}", value))
        return
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                _walk_validate(value[key], sub, f"{path}.{key}", result)
        for key in schema.get("required") or []:
            if key not in value:
                result.errors.append(FieldError("FieldValueRequired", f"{path}.{key}", has_value=False))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk_validate(item, schema["items"], f"{path}[{i}]", result)
    _validate_value(value, schema, path, result)


def _passes(value: Any, schema: dict[str, Any], path: str) -> bool:
    scratch = SchemaResult(obj={})
    _walk_validate(copy.deepcopy(value), schema, path, scratch)
    return not scratch.errors
