"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): CEL policies bound to resources, as kube-apiserver
applies them.

Why: charts ship policies that refuse bad objects at ``kubectl apply`` (the asyncdiff-operator chart refuses
AsyncDiffJobs whose ``spec.pod`` would make privileged workers); without them here, the local control plane would
accept what a real cluster refuses. Covered: each ValidatingAdmissionPolicyBinding (in name order) whose policy's
``matchConstraints.resourceRules`` (apiGroups, apiVersions, resources, operations, ``*``) and whose
``matchResources.namespaceSelector`` / ``objectSelector`` match the request; ``matchConditions``; the policy's
``validations`` (``expression``, ``message``, ``reason``) evaluated with cel-python on ``object``, ``oldObject`` and
``request``; ``validationActions`` Deny (the answer carries ``ValidatingAdmissionPolicy '<policy>' with binding
'<binding>' denied request: <message>``, 422 or the validation's reason) and Warn (a ``Warning`` header); an
evaluation error obeys ``failurePolicy``. Not covered: ``paramKind``/``paramRef`` (such policies are skipped),
``variables``, ``messageExpression``, ``auditAnnotations``, the Audit action, excludeResourceRules and the cost budget.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ApiError, forbidden
from .resources import ResourceType
from .selectors import match_label_selector

if TYPE_CHECKING:
    from .api import Api

log = logging.getLogger(__name__)
GROUP = "admissionregistration.k8s.io"
POLICIES = (GROUP, "validatingadmissionpolicies")
BINDINGS = (GROUP, "validatingadmissionpolicybindings")


@functools.cache
def _program(expression: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(expression))


def _true(expression: str, activation: dict[str, Any]) -> bool:
    """The expression's value; raises on a compile or evaluation error, or a non-boolean result."""
    result = _program(expression).evaluate(activation)
    if isinstance(result, Exception) or type(result).__name__ != "BoolType":
        raise ValueError(f"expression '{expression}' resulted in error: {result}")
    return bool(result)


def _listed(values: list[str] | None, value: str) -> bool:
    return "*" in (values or []) or value in (values or [])


def _rule_matches(rules: list[Mapping[str, Any]], rt: ResourceType, operation: str, sub: str | None) -> bool:
    resource = f"{rt.plural}/{sub}" if sub else rt.plural
    for rule in rules:
        if (
            _listed(rule.get("apiGroups"), rt.group)
            and _listed(rule.get("apiVersions"), rt.version)
            and (
                _listed(rule.get("resources"), resource) or (sub and f"{rt.plural}/*" in (rule.get("resources") or []))
            )
            and _listed(rule.get("operations"), operation)
        ):
            return True
    return False


def _selected(api: Api, match: Mapping[str, Any] | None, obj: Mapping[str, Any], rt: ResourceType) -> bool:
    match = match or {}
    meta = obj.get("metadata") or {}
    if "objectSelector" in match and not match_label_selector(match["objectSelector"], meta.get("labels") or {}):
        return False
    if rt.namespaced and "namespaceSelector" in match:
        ns = api.store.get(("", "namespaces"), "", meta.get("namespace", "")) or {}
        labels = (ns.get("metadata") or {}).get("labels") or {}
        if not match_label_selector(match["namespaceSelector"], labels):
            return False
    return True


def _activation(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, operation: str) -> dict[str, Any]:
    from celpy.adapter import json_to_cel

    meta = obj.get("metadata") or {}
    request = {
        "operation": operation,
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
        "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    }
    return {
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(old) if old is not None else None,
        "request": json_to_cel(request),
    }


def admit(
    api: Api, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, subresource: str | None
) -> list[str]:
    """Apply every binding that matches this write; raises on a Deny, returns the Warn messages."""
    if rt.group == GROUP or not api.store.items(BINDINGS):
        return []
    operation = "CREATE" if old is None else "UPDATE"
    warnings: list[str] = []
    activation: dict[str, Any] | None = None
    for binding in api.store.items(BINDINGS):
        spec = binding.get("spec") or {}
        policy = api.store.get(POLICIES, "", spec.get("policyName", ""))
        if policy is None:
            continue
        pspec = policy.get("spec") or {}
        if pspec.get("paramKind"):
            log.info(
                "ValidatingAdmissionPolicy %s: paramKind is not supported here; skipped", policy["metadata"]["name"]
            )
            continue
        constraints = pspec.get("matchConstraints") or {}
        if not _rule_matches(constraints.get("resourceRules") or [], rt, operation, subresource):
            continue
        if not (_selected(api, constraints, obj, rt) and _selected(api, spec.get("matchResources"), obj, rt)):
            continue
        if activation is None:
            activation = _activation(rt, obj, old, operation)
        warnings += _evaluate(rt, obj, policy, binding, activation)
    return warnings


def _evaluate(
    rt: ResourceType, obj: dict[str, Any], policy: dict[str, Any], binding: dict[str, Any], activation: dict[str, Any]
) -> list[str]:
    pspec, bspec = policy.get("spec") or {}, binding.get("spec") or {}
    fail_closed = pspec.get("failurePolicy", "Fail") == "Fail"
    head = f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding '{binding['metadata']['name']}'"
    try:
        for condition in pspec.get("matchConditions") or []:
            if not _true(condition["expression"], activation):
                return []
    except Exception as exc:
        if fail_closed:
            raise forbidden(f"{head} denied request: {exc}") from None
        return []
    actions = bspec.get("validationActions") or []
    warnings: list[str] = []
    for validation in pspec.get("validations") or []:
        expression = validation.get("expression", "")
        try:
            passed = _true(expression, activation)
            message = validation.get("message") or f"failed expression: {expression}"
        except Exception as exc:
            if not fail_closed:
                continue
            passed, message = False, str(exc)
        if passed:
            continue
        if "Deny" in actions:
            raise _denied(rt, obj, f"{head} denied request: {message}", validation.get("reason") or "Invalid")
        if "Warn" in actions:
            warnings.append(f"Validation failed for {head}: {message}")
    return warnings


def _denied(rt: ResourceType, obj: Mapping[str, Any], message: str, reason: str) -> ApiError:
    name = (obj.get("metadata") or {}).get("name", "")
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    if reason == "Forbidden":
        return forbidden(f'{qualified} "{name}" is forbidden: {message}', plural=rt.plural, group=rt.group, name=name)
    if reason == "Invalid":  # kube-apiserver names the resource, not the kind, and the error has no field
        details: dict[str, Any] = {
            "name": name,
            "kind": rt.plural,
            "causes": [{"reason": "FieldValueInvalid", "message": message}],
        }
        if rt.group:
            details["group"] = rt.group
        return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: : {message}', details=details)
    code = {"Unauthorized": 401, "RequestEntityTooLarge": 413}.get(reason, 422)
    return ApiError(code, reason, f'{qualified} "{name}": {message}')
