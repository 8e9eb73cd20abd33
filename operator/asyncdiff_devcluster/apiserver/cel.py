"""CEL validation rules of CRD schemas (``x-kubernetes-validations``), evaluated with cel-python.

Why: an operator's cross-field contract (for example "devices must equal gpusPerNode x numNodes" or "the spec is
immutable once started") lives in CEL rules; a test API server that skips them lets a wrong CR through ``kubectl
apply`` that a real cluster refuses. Rules are evaluated after pruning and defaulting, in the API server's order,
with ``self`` bound to the value at the rule's node and ``oldSelf`` to the stored object's value there.

Covered: ``rule``, ``message``, ``fieldPath``, ``reason`` (FieldValueInvalid, FieldValueForbidden,
FieldValueRequired, FieldValueDuplicate); transition rules (those mentioning ``oldSelf``) run only on updates where
the old value exists, as in Kubernetes; ``oldSelf`` is correlated through object properties and map values, not
through list items. Not covered: ``messageExpression``, ``optionalOldSelf``, the cost budget, and the Kubernetes
CEL library extensions (quantity, url, regex extensions beyond CEL's standard ``matches``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from ..errors import FieldError

_log = logging.getLogger(__name__)
_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
_MISSING = object()


@functools.cache
def _program(rule: str) -> Any:
    import celpy  # cel-python, a dev dependency; imported lazily so the rest of the server does not need it

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _to_cel(value: Any) -> Any:
    from celpy.adapter import json_to_cel

    return json_to_cel(value)


def evaluate(rule: str, value: Any, old: Any = _MISSING) -> str | None:
    """None when the rule holds; otherwise why not ("false" or the evaluation error)."""
    try:
        program = _program(rule)
    except ImportError:  # pragma: no cover - cel-python missing: do what a server without CEL does
        _log.warning("cel-python is not installed: x-kubernetes-validations are not checked")
        return None
    except Exception as exc:  # a rule that does not compile is the CRD author's bug: say so on every write
        return f"compilation error: {exc}"
    activation = {"self": _to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = _to_cel(old)
    try:
        result = program.evaluate(activation)
    except Exception as exc:
        return f"evaluation error: {exc}"
    if isinstance(result, Exception):
        return f"evaluation error: {result}"
    return None if bool(result) is True and type(result).__name__ == "BoolType" else "false"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return repr(value) if not isinstance(value, str) else value


def _check_node(value: Any, old: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    for spec in schema.get("x-kubernetes-validations") or []:
        rule = str(spec.get("rule", ""))
        transition = "oldSelf" in rule
        if transition and old is _MISSING:
            continue
        why = evaluate(rule, value, old if transition else _MISSING)
        if why is None:
            continue
        field = (path + str(spec.get("fieldPath") or "")).lstrip(".") or "<root>"
        reason = spec.get("reason") if spec.get("reason") in _REASONS else "FieldValueInvalid"
        message = str(spec.get("message") or f"failed rule: {rule}")
        if why != "false":
            message = f"{message} ({why})"
        if reason in ("FieldValueRequired", "FieldValueForbidden"):
            errors.append(FieldError(reason, field, message, has_value=False))
        else:
            errors.append(FieldError(reason, field, message, _describe(value)))


def validate(obj: Any, old: Any, schema: dict[str, Any] | None, path: str = "") -> list[FieldError]:
    """All rule failures in ``obj`` (``old``: the stored object on updates, else ``None``)."""
    errors: list[FieldError] = []
    if schema:
        _walk(obj, _MISSING if old is None else old, schema, path, errors)
    return errors


def _walk(value: Any, old: Any, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value or (not path and key in ("apiVersion", "kind", "metadata")):
                continue
            child_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            _walk(value[key], child_old, sub, f"{path}.{key}" if path else key, errors)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in props:
                    child_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                    _walk(item, child_old, extra, f"{path}[{key}]", errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(item, _MISSING, schema["items"], f"{path}[{i}]", errors)
    if schema.get("x-kubernetes-validations"):
        _check_node(value, old, schema, path, errors)
