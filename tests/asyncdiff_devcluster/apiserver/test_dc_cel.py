"""CEL rules (``x-kubernetes-validations``) in the local API server's schema pass: rule, message, fieldPath,
reason, transition rules with ``oldSelf``, and rules inside lists and maps."""

from __future__ import annotations

from typing import Any

from asyncdiff_devcluster.apiserver import cel, schema

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "default": 1},
                "b": {"type": "integer"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "x-kubernetes-validations": [{"rule": "!self.name.startsWith('X_')", "message": "no X_"}],
                    },
                },
                "labels": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "string",
                        "x-kubernetes-validations": [{"rule": "self.size() <= 3", "message": "too long"}],
                    },
                },
            },
            "x-kubernetes-validations": [
                {"rule": "!has(self.b) || self.b > self.a", "message": "b must exceed a", "fieldPath": ".b"},
                {"rule": "self.a == oldSelf.a", "message": "a is immutable", "reason": "FieldValueForbidden"},
            ],
        }
    },
}


def errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    result = schema.process(obj, SCHEMA, old)
    return [(e.field, e.detail) for e in result.errors]


def test_rules_see_defaults_and_name_the_field() -> None:
    assert errors({"spec": {"b": 5}}) == []
    assert errors({"spec": {"b": 0}}) == [("spec.b", "b must exceed a")]  # a defaulted to 1 first


def test_transition_rules_run_only_on_updates() -> None:
    assert errors({"spec": {"a": 2}}) == []
    assert errors({"spec": {"a": 2}}, {"spec": {"a": 2}}) == []
    assert errors({"spec": {"a": 3, "b": 9}}, {"spec": {"a": 2}}) == [("spec", "a is immutable")]


def test_rules_in_lists_and_maps() -> None:
    obj = {"spec": {"items": [{"name": "ok"}, {"name": "X_bad"}], "labels": {"k": "abcd", "j": "ab"}}}
    assert sorted(errors(obj)) == [("spec.items[1]", "no X_"), ("spec.labels[k]", "too long")]


def test_evaluation_errors_are_reported_not_raised() -> None:
    assert cel.evaluate("self.missing == 1", {"a": 1}) is not None
    assert cel.evaluate("self.a == 1", {"a": 1}) is None
    assert "compilation error" in str(cel.evaluate("self.a ==", {"a": 1}))
