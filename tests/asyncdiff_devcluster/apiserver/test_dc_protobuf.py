"""Protobuf request bodies: bytes captured from the real kubectl 1.37 (``kubectl create secret|configmap|namespace|
serviceaccount``) and messages built here with a minimal encoder decode to the JSON objects Kubernetes means;
malformed bodies answer 400 and kinds without a field map 415; kubectl's protobuf creates work end to end.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from asyncdiff_devcluster.apiserver import protobuf
from asyncdiff_devcluster.errors import ApiError
from asyncdiff_devcluster.testing import RunningDevCluster

# request bodies sent by kubectl 1.37.1 (captured on the wire)
KUBECTL_SECRET = (
    b'k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x1e\n\x12\n\x02s1\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'
    b'\x12\x06\n\x01a\x12\x01b\x1a\x00\x1a\x00"\x00'
)
KUBECTL_CONFIGMAP = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12)\n\x13\n\x03cm1\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'
    b'\x12\x06\n\x01k\x12\x01v\x1a\n\n\x03bin\x12\x03\x00\xff\x01\x1a\x00"\x00'
)
KUBECTL_NAMESPACE = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1a\n\x12\n\x02n1\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'
    b'\x12\x00\x1a\x02\n\x00\x1a\x00"\x00'
)
KUBECTL_SERVICEACCOUNT = (
    b'k8s\x00\n\x14\n\x02v1\x12\x0eServiceAccount\x12\x15\n\x13\n\x03sa1\x12\x00\x1a\x00"\x00*\x002\x008\x00'
    b'B\x00\x1a\x00"\x00'
)


# --------------------------------------------------------------------------- a minimal encoder for the tests


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def vi(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def entry(number: int, key: str, value: bytes | str) -> bytes:
    return ld(number, ld(1, key) + ld(2, value))


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return protobuf.MAGIC + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, b"") + ld(4, b"")


# --------------------------------------------------------------------------- decoding


def test_kubectl_bodies_decode_to_the_objects_kubectl_meant() -> None:
    secret = protobuf.decode_body(KUBECTL_SECRET)
    assert secret == {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"a": "Yg=="}}
    cm = protobuf.decode_body(KUBECTL_CONFIGMAP)
    assert cm["data"] == {"k": "v"}
    assert base64.b64decode(cm["binaryData"]["bin"]) == b"\x00\xff\x01"
    ns = protobuf.decode_body(KUBECTL_NAMESPACE)
    assert ns["kind"] == "Namespace" and ns["metadata"] == {"name": "n1"}
    sa = protobuf.decode_body(KUBECTL_SERVICEACCOUNT)
    assert sa == {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa1"}}


def test_metadata_fields_maps_lists_times_and_pointer_zeros() -> None:
    owner = ld(1, "Deployment") + ld(3, "web") + ld(4, "uid-1") + ld(5, "apps/v1") + vi(6, 1) + vi(7, 0)
    fields_v1 = ld(1, json.dumps({"f:data": {"f:x": {}}}))
    managed = ld(1, "helm") + ld(2, "Apply") + ld(3, "v1") + ld(4, vi(1, 1_700_000_000)) + ld(6, "FieldsV1")
    managed += ld(7, fields_v1)
    meta = (
        ld(1, "release")
        + ld(3, "ns1")
        + vi(7, 0)
        + ld(8, vi(1, 1_700_000_000) + vi(2, 5))
        + ld(8 + 1, b"")  # the zero deletionTimestamp: omitted
        + vi(10, 0)  # deletionGracePeriodSeconds is a pointer: 0 is kept
        + entry(11, "owner", "helm")
        + entry(11, "name", "rel")
        + entry(12, "note", "")
        + ld(13, owner)
        + ld(14, "a/b")
        + ld(14, "c/d")
        + ld(17, managed)
    )
    body = envelope("v1", "Secret", ld(1, meta) + entry(2, "release", b"\x01\x02") + ld(3, "helm.sh/release.v1"))
    obj = protobuf.decode_body(body)
    m = obj["metadata"]
    assert m["name"] == "release" and m["namespace"] == "ns1" and "generation" not in m
    assert m["creationTimestamp"] == "2023-11-14T22:13:20Z" and "deletionTimestamp" not in m
    assert m["deletionGracePeriodSeconds"] == 0
    assert m["labels"] == {"owner": "helm", "name": "rel"} and m["annotations"] == {"note": ""}
    assert m["ownerReferences"] == [
        {
            "kind": "Deployment",
            "name": "web",
            "uid": "uid-1",
            "apiVersion": "apps/v1",
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]
    assert m["finalizers"] == ["a/b", "c/d"]
    assert m["managedFields"][0]["fieldsV1"] == {"f:data": {"f:x": {}}}
    assert m["managedFields"][0]["manager"] == "helm"
    assert obj["data"] == {"release": "AQI="} and obj["type"] == "helm.sh/release.v1"


def test_unknown_fields_at_zero_values_are_skipped() -> None:
    meta = ld(1, "s") + ld(99, b"") + vi(98, 0) + ld(97, ld(1, b""))
    obj = protobuf.decode_body(envelope("v1", "Secret", ld(1, meta)))
    assert obj["metadata"] == {"name": "s"}


def test_delete_options_with_negative_and_repeated_fields() -> None:
    raw = vi(1, -1) + ld(2, ld(1, "uid-9") + ld(2, "42")) + ld(4, "Foreground") + ld(5, "All")
    opts = protobuf.decode_body(envelope("v1", "DeleteOptions", raw))
    assert opts["gracePeriodSeconds"] == -1
    assert opts["preconditions"] == {"uid": "uid-9", "resourceVersion": "42"}
    assert opts["propagationPolicy"] == "Foreground" and opts["dryRun"] == ["All"]
    assert protobuf.decode_body(envelope("meta.k8s.io/v1", "DeleteOptions", b""))["kind"] == "DeleteOptions"


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"\x0a\x00", 400, "magic number"),
        (protobuf.MAGIC + b"\x0a\x05\x0a", 400, "truncated"),
        (protobuf.MAGIC + b"\x0b", 400, "wire type"),
        (envelope("v1", "Pod", ld(1, ld(1, "p"))), 415, "decodes protobuf bodies only for"),
        (envelope("batch/v1", "Job", b""), 415, "batch/v1 Job"),
        # a set field the map does not know (ObjectMeta 99) is refused, not dropped; at its zero value it is skipped
        (envelope("v1", "Secret", ld(1, ld(99, "x"))), 415, "field 99 of the protobuf message ObjectMeta"),
    ],
)
def test_bad_bodies_name_the_problem(body: bytes, code: int, text: str) -> None:
    with pytest.raises(ApiError) as err:
        protobuf.decode_body(body)
    assert err.value.code == code and text in err.value.message


# --------------------------------------------------------------------------- through the server


def _post(cluster: RunningDevCluster, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{cluster.url}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": protobuf.PROTOBUF_TYPE, "Accept": f"{protobuf.PROTOBUF_TYPE},application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as rsp:
            assert rsp.headers["Content-Type"].startswith("application/json")
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_protobuf_create_answers_json(dev_cluster: RunningDevCluster, namespace: str) -> None:
    code, body = _post(dev_cluster, f"/api/v1/namespaces/{namespace}/secrets", KUBECTL_SECRET)
    assert code == 201, body
    assert body["metadata"]["namespace"] == namespace and body["type"] == "Opaque" and body["data"] == {"a": "Yg=="}
    code, body = _post(dev_cluster, f"/api/v1/namespaces/{namespace}/pods", envelope("v1", "Pod", b""))
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_kubectl_create_generators(kubectl: Callable[..., Any], namespace: str) -> None:
    kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=AWS_ACCESS_KEY_ID=k")
    kubectl("create", "configmap", "cfg", "-n", namespace, "--from-literal=a=1")
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    secret = json.loads(kubectl("get", "secret", "creds", "-n", namespace, "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]) == b"k"
    assert json.loads(kubectl("get", "cm", "cfg", "-n", namespace, "-o", "json").stdout)["data"] == {"a": "1"}
    kubectl("create", "role", "reader", "-n", namespace, "--verb=get,list", "--resource=pods", "--resource-name=x")
    kubectl("create", "rolebinding", "rb", "-n", namespace, "--role=reader", f"--serviceaccount={namespace}:robot")
    role = json.loads(kubectl("get", "role", "reader", "-n", namespace, "-o", "json").stdout)
    rule = {"apiGroups": [""], "resourceNames": ["x"], "resources": ["pods"], "verbs": ["get", "list"]}
    assert role["rules"] == [rule]
    binding = json.loads(kubectl("get", "rolebinding", "rb", "-n", namespace, "-o", "json").stdout)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}
    assert kubectl("auth", "can-i", "create", "pods", "-n", namespace).stdout.strip() == "yes"  # RBAC not enforced
    kubectl("delete", "secret", "creds", "-n", namespace)  # DeleteOptions as protobuf
    gone = kubectl("get", "secret", "creds", "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_a_client_that_accepts_only_protobuf_gets_406(dev_cluster: RunningDevCluster, namespace: str) -> None:
    request = urllib.request.Request(
        f"{dev_cluster.url}/api/v1/namespaces/{namespace}/secrets", headers={"Accept": protobuf.PROTOBUF_TYPE}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 406 and json.loads(err.value.read())["reason"] == "NotAcceptable"
