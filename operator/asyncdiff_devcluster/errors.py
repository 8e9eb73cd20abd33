"""Kubernetes-shaped API errors.

Why: every client (kubectl, the kubernetes client, kopf) decides what to do from the HTTP code *and* the
``Status`` body (``reason``, ``details.causes``), so the emulator raises one exception type that already
knows how to render itself as a real ``metav1.Status``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client as a ``kind: Status`` body with ``code``."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(kind_plural: str, name: str | None, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind_plural}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(plural, group)} "{name}" not found',
        details=_details(plural, name, group),
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        details=_details(plural, name, group),
    )


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}',
        details=_details(plural, name, group),
    )


def stale(plural: str, group: str, name: str) -> ApiError:
    return conflict(
        plural,
        group,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(message: str, *, plural: str = "", group: str = "", name: str = "") -> ApiError:
    return ApiError(403, "Forbidden", message, details=_details(plural, name, group) if plural else None)


class FieldError:
    """One ``details.causes`` entry of a 422, formatted like apimachinery's ``field.Error``."""

    def __init__(self, kind: str, field: str, detail: str = "", value: Any = None, *, has_value: bool = True):
        self.kind = kind  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTooMany...
        self.field = field
        self.detail = detail
        self.value = value
        self.has_value = has_value

    def message(self) -> str:
        head = {
            "FieldValueRequired": "Required value",
            "FieldValueInvalid": "Invalid value",
            "FieldValueNotSupported": "Unsupported value",
            "FieldValueTooMany": "Too many",
            "FieldValueTooLong": "Too long",
            "FieldValueForbidden": "Forbidden",
            "FieldValueTypeInvalid": "Invalid value",
            "FieldValueDuplicate": "Duplicate value",
            "FieldValueUnknown": "Unknown field",
        }.get(self.kind, "Invalid value")
        if self.kind in (
            "FieldValueRequired",
            "FieldValueForbidden",
            "FieldValueUnknown",
            "FieldValueTooLong",
        ):
            text = head
        elif self.has_value:
            text = f"{head}: {_render_value(self.value)}"
        else:
            text = head
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def full(self) -> str:
        return f"{self.field}: {self.message()}" if self.field else self.message()


def _render_value(value: Any) -> str:
    import json

    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(str(value))


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """A 422 ``Invalid`` answer, message like ``Pod "x" is invalid: spec.containers: Required value``."""

    qualified = f"{kind}.{group}" if group else kind
    messages = [e.full() for e in errors]
    summary = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "causes": [{"reason": e.kind, "message": e.message(), "field": e.field} for e in errors],
    }
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details=details)
