"""values.schema.json rejects bad values with a message that names the key (Helm validates it on install/upgrade).

Why: with ``additionalProperties: false`` a typo such as ``iamge`` fails ``helm install`` instead of silently
installing the defaults; each case asserts the key's path and the reason appear in Helm's own message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.packaging.helm_chart import CHART, render_files

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown top-level key", {"iamge": {}}, ["additional properties 'iamge' not allowed"]),
    ("unknown nested key", {"operator": {"watchNamespace": ["a"]}}, ["/operator", "'watchNamespace' not allowed"]),
    ("unknown key in a worker default", {"worker": {"nodeSelecter": {}}}, ["/worker", "'nodeSelecter' not allowed"]),
    ("wrong type", {"operator": {"peering": "yes"}}, ["/operator/peering", "got string, want boolean"]),
    ("wrong type of a port", {"metrics": {"port": "9090"}}, ["/metrics/port", "got string, want integer"]),
    (
        "bad image pull policy",
        {"image": {"operator": {"pullPolicy": "Sometimes"}}},
        ["/image/operator/pullPolicy", "'Always', 'IfNotPresent', 'Never'"],
    ),
    (
        "namespace that is not a DNS label",
        {"operator": {"watchNamespaces": ["Team_A"]}},
        ["/operator/watchNamespaces/0"],
    ),
    ("port out of range", {"operator": {"livenessPort": 70000}}, ["/operator/livenessPort", "want 65,535"]),
    ("root pod", {"podSecurityContext": {"runAsNonRoot": False}}, ["/podSecurityContext/runAsNonRoot"]),
    (
        "privilege escalation",
        {"securityContext": {"allowPrivilegeEscalation": True}},
        ["/securityContext/allowPrivilegeEscalation"],
    ),
    ("added capabilities", {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, ["/capabilities/add"]),
    ("bad log format", {"operator": {"logFormat": "xml"}}, ["/operator/logFormat", "'plain', 'full', 'json'"]),
    ("S3 endpoint without scheme", {"s3": {"endpoint": "minio:9000"}}, ["/s3/endpoint"]),
    ("bad quantity", {"resources": {"limits": {"memory": "lots"}}}, ["/resources/limits/memory"]),
    ("unknown toleration field", {"tolerations": [{"key": "a", "efect": "NoSchedule"}]}, ["'efect' not allowed"]),
]


@pytest.mark.parametrize(("case", "values", "expected"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_rejected(case: str, values: dict[str, Any], expected: list[str]) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError) as info:
        render_files(values)
    message = str(info.value)
    assert "values don't meet the specifications of the schema" in message
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


def _objects_without_additional_properties(node: Any, path: str = "") -> list[str]:
    """Paths of object schemas that define properties but leave additionalProperties open."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            found.append(path or "/")
        for key, value in node.items():
            found += _objects_without_additional_properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects_without_additional_properties(value, f"{path}/{i}")
    return found


def test_every_defined_object_is_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert _objects_without_additional_properties(schema) == []


def test_defaults_satisfy_the_schema() -> None:
    import jsonschema
    import yaml

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))
