"""Label and field selectors, as strings (list/watch query) and as ``LabelSelector`` objects.

Why: kopf, kubectl and the Job/Endpoints controllers all filter by labels; ``kubectl wait`` and the
Python client's ``field_selector='metadata.name=x'`` filter by fields. kmock ignored both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:\s(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_top(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    """Compile ``a=b,c!=d,e in (f,g),!h`` into a predicate over a labels dict."""
    if not selector:
        return lambda labels: True
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split_top(selector):
        tests.append(_compile_requirement(part))
    return lambda labels: all(t(labels) for t in tests)


LabelTest = Callable[[Mapping[str, str]], bool]


def _compile_requirement(part: str) -> LabelTest:
    for op in ("!=", "==", "="):
        if op in part and "(" not in part:
            key, _, value = part.partition(op)
            key, value = key.strip(), value.strip()
            if not key:
                raise bad_request(f"unable to parse requirement: {part!r}")
            negated = op == "!="

            def equality(labels: Mapping[str, str], k: str = key, v: str = value, neg: bool = negated) -> bool:
                return (labels.get(k) == v) != neg

            return equality
    m = _SET_RE.match(part)
    if not m:
        raise bad_request(f"unable to parse requirement: {part!r}")
    negate, key, op, values = m.groups()
    if op:
        allowed = {v.strip() for v in values.split(",") if v.strip()}
        inverted = op == "notin"

        def membership(labels: Mapping[str, str], k: str = key, a: set[str] = allowed, neg: bool = inverted) -> bool:
            return (labels.get(k) in a) != neg

        return membership
    absent = bool(negate)

    def existence(labels: Mapping[str, str], k: str = key, neg: bool = absent) -> bool:
        return (k in labels) != neg

    return existence


def _lookup(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _as_field_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(selector: str | None) -> Predicate:
    """Compile ``metadata.name=x,status.phase!=Running`` (any dotted path) into an object predicate."""
    if not selector:
        return lambda obj: True
    tests: list[Predicate] = []
    for part in _split_top(selector):
        for op in ("!=", "==", "="):
            if op in part:
                path, _, value = part.partition(op)
                path, value = path.strip(), value.strip()

                def check(o: Mapping[str, Any], p: str = path, v: str = value, neg: bool = op == "!=") -> bool:
                    return (_as_field_string(_lookup(o, p)) == v) != neg

                tests.append(check)
                break
        else:
            raise bad_request(f"invalid field selector: {part!r}")
    return lambda obj: all(t(obj) for t in tests)


def object_predicate(label_selector: str | None, field_selector: str | None) -> Predicate:
    labels_ok = parse_label_selector(label_selector)
    fields_ok = parse_field_selector(field_selector)

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels_ok(labels) and fields_ok(obj)

    return matches


def match_label_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Match a ``metav1.LabelSelector`` object. An empty selector matches everything, None nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key", "")
        op = expr.get("operator", "")
        values = set(expr.get("values") or [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def match_map_selector(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """A Service-style ``selector: {k: v}``; empty/None selects nothing (as for Services)."""
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())
