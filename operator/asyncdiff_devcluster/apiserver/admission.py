"""Per-kind defaulting and validation (what kube-apiserver's registry strategies do on write).

Why: clients read back what the server filled in: a Pod's ``status.phase: Pending`` and container
defaults, a Job's generated selector and ``controller-uid`` labels, a Service's ClusterIP, a
``Secret.stringData`` folded into ``data``, a CRD's ``Established`` condition. The operator and kubectl
depend on those, and on the 422s for the few invalid shapes an operator can produce by mistake
(a Job with ``restartPolicy: Always``, an immutable Job template being changed). Pod Security Admission
(``podsecurity.py``) and ValidatingAdmissionPolicies (``vap.py``) run after them: they may refuse a write or answer
warnings, which the API returns as ``Warning`` headers.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import FieldError, forbidden, invalid
from . import podsecurity, vap
from .resources import ResourceType

if TYPE_CHECKING:
    from .api import Api

JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def on_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
    """Default and validate a new object; returns admission warnings."""
    handler = _CREATE.get((rt.group, rt.plural))
    if handler is not None:
        handler(api, rt, obj)
    return _pod_security(api, rt, obj, None, None) + vap.admit(api, rt, obj, None, None)


def on_update(
    api: Api, rt: ResourceType, new: dict[str, Any], old: dict[str, Any], subresource: str | None
) -> list[str]:
    """Default and validate an update; returns admission warnings."""
    handler = _UPDATE.get((rt.group, rt.plural))
    if handler is not None:
        handler(api, rt, new, old, subresource)
    return _pod_security(api, rt, new, old, subresource) + vap.admit(api, rt, new, old, subresource)


# ---------------------------------------------------------------------------------------------- pod security


def _namespace_labels(api: Api, namespace: str) -> dict[str, str]:
    ns = api.store.get(("", "namespaces"), "", namespace) or {}
    return dict((ns.get("metadata") or {}).get("labels") or {})


def _images(pod: dict[str, Any]) -> list[Any]:
    spec = pod.get("spec") or {}
    return [c.get("image") for group in ("initContainers", "containers") for c in spec.get(group) or []]


def _pod_security(
    api: Api, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, subresource: str | None
) -> list[str]:
    """Pod Security Admission (``podsecurity.py``) for pods, workload templates and namespace labels."""
    key = (rt.group, rt.plural)
    meta = obj.get("metadata") or {}
    if key == ("", "namespaces"):
        return _namespace_security(api, obj, old) if subresource is None else []
    if key == ("", "pods"):
        if subresource is not None or (old is not None and _images(obj) == _images(old)):
            return []  # only image changes are significant pod updates
        decision = podsecurity.admit_pod(
            _namespace_labels(api, meta.get("namespace", "")), meta, obj.get("spec") or {}, enforce=True
        )
        if decision.forbidden is not None:
            name = meta.get("name", "")
            raise forbidden(f'pods "{name}" is forbidden: {decision.forbidden}', plural="pods", name=name)
        return decision.warnings or []
    template = podsecurity.template_of(rt.group, rt.plural, obj) if subresource is None else None
    if template is None:
        return []
    decision = podsecurity.admit_pod(
        _namespace_labels(api, meta.get("namespace", "")),
        template.get("metadata") or {},
        template.get("spec") or {},
        enforce=False,
    )
    return decision.warnings or []


def _namespace_security(api: Api, obj: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    policy, errors = podsecurity.policy_for(labels)
    old_policy, old_errors = podsecurity.policy_for(((old or {}).get("metadata") or {}).get("labels"))
    if errors and (old is None or errors != old_errors):
        raise invalid(
            "Namespace",
            "",
            obj["metadata"]["name"],
            [FieldError("FieldValueInvalid", f"metadata.labels[{e.label}]", e.detail, e.value) for e in errors],
        )
    if old is None:
        return []
    name = obj["metadata"]["name"]
    pods = api.store.items(("", "pods"), name)
    return podsecurity.namespace_warnings(name, old_policy.enforce, policy.enforce, pods)


# ---------------------------------------------------------------------------------------------- pods


def _qos(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in lim or (name in req and req[name] != lim[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for group in ("initContainers", "containers"):
        for c in spec.get(group) or []:
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = str(c.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            c.setdefault("imagePullPolicy", "Always" if (":" not in tag or tag.endswith(":latest")) else "IfNotPresent")
            c.setdefault("resources", {})
            res = c["resources"]
            if res.get("limits") and not res.get("requests"):
                res["requests"] = dict(res["limits"])
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")


def _validate_pod_spec(spec: dict[str, Any], prefix: str) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers")
    if not containers:
        errors.append(FieldError("FieldValueRequired", f"{prefix}.containers", has_value=False))
    names: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            path = f"{prefix}.{group}[{i}]"
            if not c.get("name"):
                errors.append(FieldError("FieldValueRequired", f"{path}.name", has_value=False))
            elif c["name"] in names:
                errors.append(FieldError("FieldValueDuplicate", f"{path}.name", "", c["name"]))
            names.add(c.get("name", ""))
            if not c.get("image"):
                errors.append(FieldError("FieldValueRequired", f"{path}.image", has_value=False))
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        errors.append(
            FieldError(
                "FieldValueNotSupported",
                f"{prefix}.restartPolicy",
                'supported values: "Always", "OnFailure", "Never"',
                policy,
            )
        )
    return errors


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def label_value_errors(labels: dict[str, Any], path: str) -> list[FieldError]:
    """apimachinery's ValidateLabels for the values: at most 63 characters of [-A-Za-z0-9_.], alphanumeric ends."""
    errors: list[FieldError] = []
    for value in labels.values():
        text = str(value)
        if len(text) > 63:
            errors.append(FieldError("FieldValueInvalid", path, "must be no more than 63 characters", text))
        elif not _LABEL_VALUE.match(text):
            detail = (
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character"
            )
            errors.append(FieldError("FieldValueInvalid", path, detail, text))
    return errors


def _pod_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    errors = _validate_pod_spec(spec, "spec")
    if errors:
        raise invalid(rt.kind, rt.group, obj["metadata"]["name"], errors)
    default_pod_spec(spec)
    obj["status"] = {"phase": "Pending", "qosClass": _qos(spec)}


_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


def _pod_update(api: Api, rt: ResourceType, new: dict[str, Any], old: dict[str, Any], sub: str | None) -> None:
    if sub is not None:
        return
    new_spec, old_spec = copy.deepcopy(new.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
    default_pod_spec(new_spec)
    for spec in (new_spec, old_spec):
        for key in _POD_MUTABLE:
            spec.pop(key, None)
        for group in ("initContainers", "containers"):
            for c in spec.get(group) or []:
                c.pop("image", None)
    if not old_spec.get("nodeName"):
        new_spec.pop("nodeName", None)
        old_spec.pop("nodeName", None)
    if new_spec != old_spec:
        raise invalid(
            rt.kind,
            rt.group,
            new["metadata"]["name"],
            [
                FieldError(
                    "FieldValueForbidden",
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`, "
                    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
                    "(only additions to existing tolerations), `spec.terminationGracePeriodSeconds`",
                    has_value=False,
                )
            ],
        )
    default_pod_spec(new["spec"])


# ---------------------------------------------------------------------------------------------- jobs


def _job_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    name, uid = meta["name"], meta["uid"]
    errors: list[FieldError] = []
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6 if spec.get("backoffLimitPerIndex") is None else 2147483647)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    labels = tmeta.setdefault("labels", {})
    if not spec.get("manualSelector"):
        for key in JOB_UID_LABELS:
            labels[key] = uid
        for key in JOB_NAME_LABELS:
            labels[key] = name
        spec["selector"] = {"matchLabels": {JOB_UID_LABELS[0]: uid}}
    tspec = template.setdefault("spec", {})
    errors += label_value_errors(labels, "spec.template.labels")  # e.g. a Job name over 63 characters
    errors += _validate_pod_spec(tspec, "spec.template.spec")
    if tspec.get("restartPolicy") not in ("OnFailure", "Never"):
        errors.append(
            FieldError(
                "FieldValueRequired" if tspec.get("restartPolicy") is None else "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                'supported values: "OnFailure", "Never"',
                tspec.get("restartPolicy"),
                has_value=tspec.get("restartPolicy") is not None,
            )
        )
    if spec["completionMode"] not in ("NonIndexed", "Indexed"):
        errors.append(
            FieldError(
                "FieldValueNotSupported",
                "spec.completionMode",
                'supported values: "NonIndexed", "Indexed"',
                spec["completionMode"],
            )
        )
    if spec["completionMode"] == "Indexed" and spec.get("completions") is None:
        errors.append(
            FieldError("FieldValueRequired", "spec.completions", "when completion mode is Indexed", has_value=False)
        )
    for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or value < (1 if key == "activeDeadlineSeconds" else 0)):
            errors.append(FieldError("FieldValueInvalid", f"spec.{key}", "must be greater than or equal to 0", value))
    policy = spec.get("podFailurePolicy")
    if policy:
        if tspec.get("restartPolicy") != "Never":
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    "spec.template.spec.restartPolicy",
                    'only "Never" is supported when podFailurePolicy is specified',
                    tspec.get("restartPolicy"),
                )
            )
        for i, rule in enumerate(policy.get("rules") or []):
            action = rule.get("action")
            if action not in ("FailJob", "Ignore", "Count", "FailIndex"):
                errors.append(
                    FieldError(
                        "FieldValueNotSupported",
                        f"spec.podFailurePolicy.rules[{i}].action",
                        'supported values: "Count", "FailIndex", "FailJob", "Ignore"',
                        action,
                    )
                )
            if action == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
                errors.append(
                    FieldError(
                        "FieldValueInvalid",
                        f"spec.podFailurePolicy.rules[{i}].action",
                        "requires the backoffLimitPerIndex to be set",
                        action,
                    )
                )
            if bool(rule.get("onExitCodes")) == bool(rule.get("onPodConditions")):
                errors.append(
                    FieldError(
                        "FieldValueInvalid",
                        f"spec.podFailurePolicy.rules[{i}]",
                        "specifying one of OnExitCodes and OnPodConditions is required",
                        has_value=False,
                    )
                )
    if errors:
        raise invalid(rt.kind, rt.group, name, errors)
    default_pod_spec(tspec)
    obj["status"] = {}


def _job_update(api: Api, rt: ResourceType, new: dict[str, Any], old: dict[str, Any], sub: str | None) -> None:
    if sub is not None:
        return
    ns, os_ = new.get("spec") or {}, old.get("spec") or {}
    default_pod_spec((ns.get("template") or {}).setdefault("spec", {}))
    errors = []
    for key in ("selector", "completionMode", "podFailurePolicy", "backoffLimitPerIndex"):
        if ns.get(key) != os_.get(key) and key in os_:
            errors.append(FieldError("FieldValueInvalid", f"spec.{key}", "field is immutable", ns.get(key)))
    if ns.get("template") != os_.get("template") and not os_.get("suspend"):
        errors.append(FieldError("FieldValueInvalid", "spec.template", "field is immutable", ns.get("template")))
    if ns.get("completions") != os_.get("completions") and ns.get("completionMode") != "Indexed":
        errors.append(FieldError("FieldValueInvalid", "spec.completions", "field is immutable", ns.get("completions")))
    if errors:
        raise invalid(rt.kind, rt.group, new["metadata"]["name"], errors)


# ---------------------------------------------------------------------------------------------- others


def _service_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("type") != "ExternalName":
        if spec.get("clusterIP") in (None, ""):
            for i in range(1, 65000):
                ip = f"10.96.{i // 250}.{i % 250 + 1}"
                if ip not in api.cluster_ips:
                    api.cluster_ips.add(ip)
                    spec["clusterIP"] = ip
                    break
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj["status"] = {"loadBalancer": {}}


def _secret_write(api: Api, rt: ResourceType, obj: dict[str, Any], *_: Any) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _namespace_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


def _crd_validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = obj["metadata"]["name"]
    errors: list[FieldError] = []
    group = spec.get("group")
    plural = names.get("plural")
    if not group:
        errors.append(FieldError("FieldValueRequired", "spec.group", has_value=False))
    if not plural:
        errors.append(FieldError("FieldValueRequired", "spec.names.plural", has_value=False))
    if not names.get("kind"):
        errors.append(FieldError("FieldValueRequired", "spec.names.kind", has_value=False))
    if group and plural and name != f"{plural}.{group}":
        errors.append(
            FieldError("FieldValueInvalid", "metadata.name", 'must be spec.names.plural+"."+spec.group', name)
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(
            FieldError(
                "FieldValueNotSupported",
                "spec.scope",
                'supported values: "Cluster", "Namespaced"',
                spec.get("scope"),
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        errors.append(FieldError("FieldValueRequired", "spec.versions", has_value=False))
    storage = [v for v in versions if v.get("storage")]
    if versions and len(storage) != 1:
        errors.append(
            FieldError(
                "FieldValueInvalid",
                "spec.versions",
                "must have exactly one version marked as storage version",
                has_value=False,
            )
        )
    for i, version in enumerate(versions):
        sch = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(sch, dict):
            errors.append(
                FieldError(
                    "FieldValueRequired",
                    f"spec.versions[{i}].schema.openAPIV3Schema",
                    "schemas are required",
                    has_value=False,
                )
            )
        elif sch.get("type") != "object":
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    f"spec.versions[{i}].schema.openAPIV3Schema.type",
                    "must be object",
                    sch.get("type"),
                )
            )
    if errors:
        raise invalid(rt.kind, rt.group, name, errors)


def _crd_status(obj: dict[str, Any]) -> None:
    from .api import now_rfc3339

    spec = obj["spec"]
    stamp = now_rfc3339()
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    status = obj.setdefault("status", {})
    status["acceptedNames"] = copy.deepcopy(spec.get("names") or {})
    stored = list(status.get("storedVersions") or [])
    for version in storage:
        if version not in stored:
            stored.append(version)
    status["storedVersions"] = stored
    if not status.get("conditions"):
        status["conditions"] = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": stamp,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": stamp,
            },
        ]


def _crd_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    _crd_validate(rt, obj)
    spec = obj["spec"]
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec["names"]
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if "customresourcecleanup.apiextensions.k8s.io" not in finalizers:
        finalizers.append("customresourcecleanup.apiextensions.k8s.io")
    _crd_status(obj)


def _crd_update(api: Api, rt: ResourceType, new: dict[str, Any], old: dict[str, Any], sub: str | None) -> None:
    if sub is None:
        _crd_validate(rt, new)
        if new["spec"].get("group") != old["spec"].get("group") or new["spec"]["names"].get("plural") != old["spec"][
            "names"
        ].get("plural"):
            raise invalid(
                rt.kind,
                rt.group,
                new["metadata"]["name"],
                [FieldError("FieldValueInvalid", "spec.group", "field is immutable", new["spec"].get("group"))],
            )
        new["spec"]["names"].setdefault("singular", new["spec"]["names"]["kind"].lower())
        new["spec"]["names"].setdefault("listKind", f"{new['spec']['names']['kind']}List")
    _crd_status(new)


def _node_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    obj.setdefault("spec", {})


CreateHook = Callable[["Api", ResourceType, dict[str, Any]], None]
UpdateHook = Callable[["Api", ResourceType, dict[str, Any], dict[str, Any], "str | None"], None]


def _ssar_create(api: Api, rt: ResourceType, obj: dict[str, Any]) -> None:
    obj["status"] = {"allowed": True, "reason": "the dev cluster does not enforce RBAC"}


_CREATE: dict[tuple[str, str], CreateHook] = {
    ("", "pods"): _pod_create,
    ("batch", "jobs"): _job_create,
    ("", "services"): _service_create,
    ("", "secrets"): _secret_write,
    ("", "namespaces"): _namespace_create,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd_create,
    ("", "nodes"): _node_create,
    ("authorization.k8s.io", "selfsubjectaccessreviews"): _ssar_create,
}
_UPDATE: dict[tuple[str, str], UpdateHook] = {
    ("", "pods"): _pod_update,
    ("batch", "jobs"): _job_update,
    ("", "secrets"): _secret_write,
    ("apiextensions.k8s.io", "customresourcedefinitions"): _crd_update,
}
