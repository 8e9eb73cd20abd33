"""Decode the Kubernetes protobuf request bodies that client-go sends (``application/vnd.kubernetes.protobuf``).

Why: typed client-go clients (Helm's release storage, ``kubectl create secret|configmap|namespace|serviceaccount|
role|clusterrole|rolebinding|clusterrolebinding``, ``kubectl auth can-i``, the ``DeleteOptions`` of their deletes)
encode request bodies as protobuf whenever the server advertises it, and they do not retry as JSON after a 415:
Helm cannot store a release at all. The answers stay JSON, which every
client accepts (its ``Accept`` header always lists ``application/json`` after protobuf).

The wire format (apimachinery ``runtime/serializer/protobuf``): the 4 bytes ``k8s\\x00`` then a
``runtime.Unknown`` message (1: TypeMeta {1 apiVersion, 2 kind}, 2: raw, 3: contentEncoding, 4: contentType)
whose ``raw`` is the object's message from ``k8s.io/api/.../generated.proto``. Messages are proto2 as generated
by go-to-protobuf: scalar fields of non-pointer Go fields are always sent, so zero values are dropped here (the
JSON of those fields is ``omitempty``) except where the Go field is a pointer (``keep``: present means set).
Maps are repeated entries {1 key, 2 value}; ``bytes`` become base64 strings as in JSON; ``Time`` {1 seconds,
2 nanos} becomes RFC 3339; ``FieldsV1`` {1 raw JSON} becomes that JSON.

The field maps below cover the kinds those clients send, with field numbers from ``generated.proto`` of
k8s.io/api core/v1, rbac/v1 and authorization/v1 and k8s.io/apimachinery meta/v1. A kind without a map answers
415 naming the kinds that are decoded, so the gap is visible instead of a silently wrong object; so does a set
field that a map does not know (an unknown field at its zero value carries nothing and is skipped).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from ..errors import bad_request, unsupported_media_type

PROTOBUF_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
GO_ZERO_TIME = -62135596800  # time.Time{}.Unix()

# scalar kinds; anything else names a message in MESSAGES
SCALARS = frozenset({"string", "bytes", "int32", "int64", "bool", "time", "fieldsv1", "quantity", "intorstring"})


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # a scalar kind above, or a message name
    repeated: bool = False
    map_value: str | None = None  # for map<string, map_value>: kind of the value
    keep: bool = False  # a Go pointer: a zero value that is present is kept


def _f(name: str, kind: str, *, rep: bool = False, keep: bool = False) -> Field:
    return Field(name, kind, repeated=rep, keep=keep)


def _map(name: str, value_kind: str) -> Field:
    return Field(name, "map", map_value=value_kind)


# message name -> field number -> Field
MESSAGES: dict[str, dict[int, Field]] = {
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {
        1: _f("name", "string"),
        2: _f("generateName", "string"),
        3: _f("namespace", "string"),
        4: _f("selfLink", "string"),
        5: _f("uid", "string"),
        6: _f("resourceVersion", "string"),
        7: _f("generation", "int64"),
        8: _f("creationTimestamp", "time"),
        9: _f("deletionTimestamp", "time"),
        10: _f("deletionGracePeriodSeconds", "int64", keep=True),
        11: _map("labels", "string"),
        12: _map("annotations", "string"),
        13: _f("ownerReferences", "OwnerReference", rep=True),
        14: _f("finalizers", "string", rep=True),
        17: _f("managedFields", "ManagedFieldsEntry", rep=True),
    },
    "OwnerReference": {
        1: _f("kind", "string"),
        3: _f("name", "string"),
        4: _f("uid", "string"),
        5: _f("apiVersion", "string"),
        6: _f("controller", "bool", keep=True),
        7: _f("blockOwnerDeletion", "bool", keep=True),
    },
    "ManagedFieldsEntry": {
        1: _f("manager", "string"),
        2: _f("operation", "string"),
        3: _f("apiVersion", "string"),
        4: _f("time", "time"),
        6: _f("fieldsType", "string"),
        7: _f("fieldsV1", "fieldsv1"),
        8: _f("subresource", "string"),
    },
    "DeleteOptions": {
        1: _f("gracePeriodSeconds", "int64", keep=True),
        2: _f("preconditions", "Preconditions"),
        3: _f("orphanDependents", "bool", keep=True),
        4: _f("propagationPolicy", "string", keep=True),
        5: _f("dryRun", "string", rep=True),
        6: _f("ignoreStoreReadErrorWithClusterBreakingPotential", "bool", keep=True),
    },
    "Preconditions": {1: _f("uid", "string", keep=True), 2: _f("resourceVersion", "string", keep=True)},
    # k8s.io/api/core/v1
    "Secret": {
        1: _f("metadata", "ObjectMeta"),
        2: _map("data", "bytes"),
        3: _f("type", "string"),
        4: _map("stringData", "string"),
        5: _f("immutable", "bool", keep=True),
    },
    "ConfigMap": {
        1: _f("metadata", "ObjectMeta"),
        2: _map("data", "string"),
        3: _map("binaryData", "bytes"),
        4: _f("immutable", "bool", keep=True),
    },
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec"), 3: _f("status", "NamespaceStatus")},
    "NamespaceSpec": {1: _f("finalizers", "string", rep=True)},
    "NamespaceStatus": {1: _f("phase", "string")},
    "ServiceAccount": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("secrets", "ObjectReference", rep=True),
        3: _f("imagePullSecrets", "LocalObjectReference", rep=True),
        4: _f("automountServiceAccountToken", "bool", keep=True),
    },
    "ObjectReference": {
        1: _f("kind", "string"),
        2: _f("namespace", "string"),
        3: _f("name", "string"),
        4: _f("uid", "string"),
        5: _f("apiVersion", "string"),
        6: _f("resourceVersion", "string"),
        7: _f("fieldPath", "string"),
    },
    "LocalObjectReference": {1: _f("name", "string")},
    # k8s.io/apimachinery meta/v1 LabelSelector (ClusterRole aggregation)
    "LabelSelector": {
        1: _map("matchLabels", "string"),
        2: _f("matchExpressions", "LabelSelectorRequirement", rep=True),
    },
    "LabelSelectorRequirement": {
        1: _f("key", "string"),
        2: _f("operator", "string"),
        3: _f("values", "string", rep=True),
    },
    # k8s.io/api/rbac/v1 (kubectl create role|clusterrole|rolebinding|clusterrolebinding)
    "Role": {1: _f("metadata", "ObjectMeta"), 2: _f("rules", "PolicyRule", rep=True)},
    "ClusterRole": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("rules", "PolicyRule", rep=True),
        3: _f("aggregationRule", "AggregationRule"),
    },
    "AggregationRule": {1: _f("clusterRoleSelectors", "LabelSelector", rep=True)},
    "PolicyRule": {
        1: _f("verbs", "string", rep=True),
        2: _f("apiGroups", "string", rep=True),
        3: _f("resources", "string", rep=True),
        4: _f("resourceNames", "string", rep=True),
        5: _f("nonResourceURLs", "string", rep=True),
    },
    "RoleBinding": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("subjects", "Subject", rep=True),
        3: _f("roleRef", "RoleRef"),
    },
    "Subject": {
        1: _f("kind", "string"),
        2: _f("apiGroup", "string"),
        3: _f("name", "string"),
        4: _f("namespace", "string"),
    },
    "RoleRef": {1: _f("apiGroup", "string"), 2: _f("kind", "string"), 3: _f("name", "string")},
    # k8s.io/api/authorization/v1 (kubectl auth can-i)
    "SelfSubjectAccessReview": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {
        1: _f("resourceAttributes", "ResourceAttributes"),
        2: _f("nonResourceAttributes", "NonResourceAttributes"),
    },
    "ResourceAttributes": {
        1: _f("namespace", "string"),
        2: _f("verb", "string"),
        3: _f("group", "string"),
        4: _f("version", "string"),
        5: _f("resource", "string"),
        6: _f("subresource", "string"),
        7: _f("name", "string"),
    },
    "NonResourceAttributes": {1: _f("path", "string"), 2: _f("verb", "string")},
}

# (apiVersion, kind) of a top-level body -> its message. DeleteOptions arrive with apiVersion v1 or
# meta.k8s.io/v1 depending on the client's group version, so meta kinds match on the kind alone.
TOP_LEVEL: dict[tuple[str, str], str] = {
    ("v1", "Secret"): "Secret",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Namespace"): "Namespace",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",  # the same fields
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
}
META_KINDS = frozenset({"DeleteOptions"})


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise WireError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise WireError("varint longer than 10 bytes")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("truncated field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """The raw (field number, wire type, value) triples of one message, in order."""
    reader = _Reader(data)
    out: list[tuple[int, int, int | bytes]] = []
    while not reader.done():
        key = reader.varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire == 0:
            value = reader.varint()
        elif wire == 1:
            value = int.from_bytes(reader.take(8), "little")
        elif wire == 2:
            value = reader.take(reader.varint())
        elif wire == 5:
            value = int.from_bytes(reader.take(4), "little")
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")
        out.append((number, wire, value))
    return out


def _signed(value: int, bits: int) -> int:
    value &= (1 << 64) - 1  # negative int32s are sent as 10-byte varints too
    if value >= 1 << (bits - 1) and bits == 64:
        return value - (1 << 64)
    if bits == 32:
        value &= (1 << 32) - 1
        return value - (1 << 32) if value >= 1 << 31 else value
    return value


def _is_zero(value: Any) -> bool:
    return value in ("", 0, False) or value is None or value == {} or value == []


def _zero_wire(value: int | bytes, depth: int = 0) -> bool:
    """Whether a raw value is a zero: 0, empty, or a message all of whose fields are zeros (go-to-protobuf sends
    the zero values of non-pointer fields)."""
    if isinstance(value, int):
        return value == 0
    if not value:
        return True
    if depth > 32:
        return False
    try:
        return all(_zero_wire(v, depth + 1) for _, _, v in fields(value))
    except WireError:
        return False  # not a message: a non-empty string or bytes


def _need(value: int | bytes, field: Field, wire_bytes: bool) -> Any:
    if wire_bytes and not isinstance(value, bytes):
        raise WireError(f"field {field.name}: expected a length-delimited value")
    if not wire_bytes and isinstance(value, bytes):
        raise WireError(f"field {field.name}: expected a varint")
    return value


def _time(data: bytes) -> str | None:
    seconds = nanos = 0
    for number, _, value in fields(data):
        if number == 1 and isinstance(value, int):
            seconds = _signed(value, 64)
        elif number == 2 and isinstance(value, int):
            nanos = _signed(value, 32)
    if (seconds == 0 and nanos == 0) or seconds <= GO_ZERO_TIME:
        return None  # the zero Time is JSON null
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(kind: str, value: int | bytes, field: Field) -> Any:
    if kind == "string":
        return bytes(_need(value, field, True)).decode("utf-8")
    if kind == "bytes":
        return base64.b64encode(_need(value, field, True)).decode("ascii")
    if kind == "int32":
        return _signed(_need(value, field, False), 32)
    if kind == "int64":
        return _signed(_need(value, field, False), 64)
    if kind == "bool":
        return bool(_need(value, field, False))
    if kind == "time":
        return _time(_need(value, field, True))
    if kind == "fieldsv1":
        raw = next((v for n, _, v in fields(_need(value, field, True)) if n == 1 and isinstance(v, bytes)), b"")
        return json.loads(raw) if raw else None
    if kind == "quantity":
        parts_q = fields(_need(value, field, True))
        return next((v.decode() for n, _, v in parts_q if n == 1 and isinstance(v, bytes)), "")
    if kind == "intorstring":
        parts = {n: v for n, _, v in fields(_need(value, field, True))}
        if parts.get(1, 0) == 1:
            raw_str = parts.get(3, b"")
            return raw_str.decode() if isinstance(raw_str, bytes) else ""
        raw_int = parts.get(2, 0)
        return _signed(raw_int, 32) if isinstance(raw_int, int) else 0
    raise WireError(f"unknown scalar kind {kind}")


def _value(kind: str, value: int | bytes, field: Field) -> Any:
    if kind in SCALARS:
        return _scalar(kind, value, field)
    return decode_message(kind, _need(value, field, True))


def decode_message(message: str, data: bytes) -> dict[str, Any]:
    """One message as the JSON object Kubernetes would have sent for it."""
    schema = MESSAGES[message]
    out: dict[str, Any] = {}
    for number, _wire, value in fields(data):
        field = schema.get(number)
        if field is None:
            if not _zero_wire(value):  # a set field this map does not know: refuse rather than drop it silently
                raise unsupported_media_type(
                    f"the asyncdiff dev cluster cannot decode field {number} of the protobuf message {message}: "
                    f'send the object as "application/json"'
                )
            continue  # an unknown field at its zero value carries nothing
        if field.map_value is not None:
            entry = {n: v for n, _, v in fields(_need(value, field, True))}
            key = entry.get(1, b"")
            if not isinstance(key, bytes):
                raise WireError(f"field {field.name}: map key is not a string")
            val = entry.get(2, b"" if field.map_value in ("string", "bytes") else 0)
            out.setdefault(field.name, {})[key.decode("utf-8")] = _value(field.map_value, val, field)
            continue
        if field.repeated:
            if field.kind in ("int32", "int64") and isinstance(value, bytes):  # packed
                reader = _Reader(value)
                while not reader.done():
                    out.setdefault(field.name, []).append(_scalar(field.kind, reader.varint(), field))
                continue
            out.setdefault(field.name, []).append(_value(field.kind, value, field))
            continue
        decoded = _value(field.kind, value, field)
        if decoded is None or (_is_zero(decoded) and not field.keep and field.kind in SCALARS):
            out.pop(field.name, None)
            continue
        out[field.name] = decoded
    return out


def decode_body(raw: bytes) -> dict[str, Any]:
    """A protobuf request body (``k8s\\x00`` + runtime.Unknown) as the JSON object it stands for.

    Raises 400 for malformed bytes and 415 for a kind without a field map.
    """
    if not raw.startswith(MAGIC):
        raise bad_request("the protobuf body does not start with the Kubernetes magic number k8s\\x00")
    try:
        envelope = {n: v for n, _, v in fields(raw[len(MAGIC) :])}
        type_meta = envelope.get(1, b"")
        payload = envelope.get(2, b"")
        encoding = envelope.get(3, b"")
        if not isinstance(type_meta, bytes) or not isinstance(payload, bytes):
            raise WireError("runtime.Unknown fields 1 and 2 must be length-delimited")
        if encoding not in (b"", None):
            raise WireError(f"unsupported contentEncoding {encoding!r}")
        tm = {n: v for n, _, v in fields(type_meta)}
        api_version = tm.get(1, b"")
        kind = tm.get(2, b"")
        if not isinstance(api_version, bytes) or not isinstance(kind, bytes):
            raise WireError("TypeMeta fields must be strings")
        gv, k = api_version.decode(), kind.decode()
        message = k if k in META_KINDS else TOP_LEVEL.get((gv, k))
        if message is None:
            decoded = ", ".join(sorted({f"{v} {kk}" for v, kk in TOP_LEVEL} | META_KINDS))
            raise unsupported_media_type(
                f"the asyncdiff dev cluster decodes protobuf bodies only for {decoded}; got {gv} {k}: "
                f'send it as "application/json" (kubectl apply -f)'
            )
        obj = decode_message(message, payload)
    except (WireError, UnicodeDecodeError, ValueError) as exc:  # json errors are ValueErrors
        raise bad_request(f"error decoding protobuf body: {exc}") from None
    obj["apiVersion"] = gv
    obj["kind"] = k
    return obj
