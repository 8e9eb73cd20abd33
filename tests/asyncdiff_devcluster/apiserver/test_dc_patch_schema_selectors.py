"""Unit tests of the API server's pure parts: patches, schema processing, selectors, JSONPath, tables."""

from __future__ import annotations

from typing import Any

import pytest
from asyncdiff_devcluster.apiserver import jsonpath, patch, schema, selectors, tables
from asyncdiff_devcluster.errors import ApiError


def test_merge_patch_deletes_with_null_and_replaces_lists() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert patch.merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, 2]}


def test_json_patch_operations_and_failures() -> None:
    doc: dict[str, Any] = {"a": [1, 2], "m": {"x~y": 1, "s/t": 2}}
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/m/x~0y"},
        {"op": "replace", "path": "/m/s~1t", "value": 5},
        {"op": "copy", "from": "/a", "path": "/b"},
        {"op": "move", "from": "/b", "path": "/c"},
        {"op": "test", "path": "/c/3", "value": 3},
    ]
    assert patch.json_patch(doc, ops) == {"a": [0, 1, 2, 3], "m": {"s/t": 5}, "c": [0, 1, 2, 3]}
    with pytest.raises(ApiError) as exc:
        patch.json_patch(doc, [{"op": "test", "path": "/a/0", "value": 9}])
    assert exc.value.code == 422
    with pytest.raises(ApiError) as exc:
        patch.json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert exc.value.code == 422


def test_strategic_merge_patch_directives() -> None:
    pod = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {
                    "name": "c1",
                    "image": "i1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "c2", "image": "i2", "ports": [{"containerPort": 80}]},
            ],
            "tolerations": [{"key": "x"}],
        },
    }
    smp = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "c2"}, {"name": "c1"}],
            "containers": [
                {"name": "c1", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]},
                {"name": "c2", "ports": [{"containerPort": 81}]},
            ],
            "tolerations": [{"key": "y"}],
        },
    }
    out = patch.strategic_merge_patch(pod, smp)
    assert [c["name"] for c in out["spec"]["containers"]] == ["c2", "c1"]
    assert out["spec"]["containers"][1]["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert [p["containerPort"] for p in out["spec"]["containers"][0]["ports"]] == [80, 81]
    assert out["spec"]["tolerations"] == [{"key": "y"}] and out["metadata"]["finalizers"] == ["a", "b"]
    assert patch.strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}) == {
        "spec": {"c": 3}
    }


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "steps": {"type": "integer", "default": 20, "minimum": 1, "maximum": 200},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": True},
                "opts": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "v": {"type": "integer", "default": 1}},
                    },
                },
                "name": {"type": "string", "pattern": "^[a-z]+$", "nullable": True},
            },
        }
    },
}


def test_schema_defaults_prunes_and_validates() -> None:
    obj = {
        "apiVersion": "x/v1",
        "kind": "K",
        "metadata": {"name": "n"},
        "spec": {"model": "m", "junk": 1, "items": [{"name": "a"}], "port": "http"},
    }
    result = schema.process(obj, SCHEMA)
    assert result.errors == [] and result.unknown_fields == ["spec.junk"]
    assert result.obj["spec"] == {"model": "m", "steps": 20, "items": [{"name": "a", "v": 1}], "port": "http"}
    bad = schema.process(
        {
            "spec": {
                "model": "",
                "steps": 0,
                "mode": "c",
                "opts": {"k": 1},
                "items": [{"name": "a"}, {"name": "a"}],
                "name": "A1",
            }
        },
        SCHEMA,
    )
    messages = sorted(e.full() for e in bad.errors)
    assert 'spec.model: Invalid value: "": spec.model in body should be at least 1 chars long' in messages
    assert "spec.steps: Invalid value: 0: spec.steps in body should be greater than or equal to 1" in messages
    assert 'spec.mode: Unsupported value: "c": supported values: "a", "b"' in messages
    assert 'spec.opts.k: Invalid value: 1: spec.opts.k in body must be of type string: "integer"' in messages
    assert 'spec.items[1]: Duplicate value: {"name": "a"}' in [m.replace('"object"', '{"name": "a"}') for m in messages]
    assert "spec.name: Invalid value: \"A1\": spec.name in body should match '^[a-z]+$'" in messages
    assert schema.process({"spec": {}}, SCHEMA).errors[0].full() == "spec.model: Required value"
    assert schema.process({"spec": {"model": "m", "name": None}}, SCHEMA).errors == []


def test_label_selector_grammar() -> None:
    match = selectors.parse_label_selector("a=1,b!=2,c in (x, y),d notin (z),e,!f")
    assert match({"a": "1", "b": "3", "c": "x", "d": "q", "e": ""})
    assert not match({"a": "1", "b": "3", "c": "x", "d": "q", "e": "", "f": "1"})
    assert not match({"a": "1", "c": "w", "e": ""})
    assert selectors.match_label_selector({"matchExpressions": [{"key": "k", "operator": "Exists"}]}, {"k": ""})
    assert not selectors.match_label_selector(None, {})
    with pytest.raises(ApiError):
        selectors.parse_label_selector("a in (")
    fields = selectors.parse_field_selector("metadata.name=x,status.phase!=Running")
    assert fields({"metadata": {"name": "x"}, "status": {"phase": "Pending"}})


def test_jsonpath_and_tables() -> None:
    obj = {"status": {"conditions": [{"type": "A"}, {"type": "B"}]}, "spec": {"m": {"k": "v"}}}
    assert jsonpath.find(obj, ".status.conditions[-1:].type") == ["B"]
    assert jsonpath.find(obj, ".status.conditions[*].type") == ["A", "B"]
    assert jsonpath.find(obj, ".spec.m['k']") == ["v"]
    assert jsonpath.find(obj, ".missing.x") == []
    assert [tables.human_duration(s) for s in (5, 130, 700, 4000, 100000)] == [
        "5s",
        "2m10s",
        "11m",
        "66m",
        "27h",
    ]
