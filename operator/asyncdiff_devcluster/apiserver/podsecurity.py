"""Pod Security Admission as kube-apiserver runs it: namespace labels select a Pod Security Standard per mode.

Why: platform teams label workload namespaces ``pod-security.kubernetes.io/enforce: restricted``; a pod that breaks
the standard is refused there, so a product must be tested against it. This module copies the built-in admission
plugin (``k8s.io/pod-security-admission``): its checks, their order, their messages and its label parsing.

- Labels ``pod-security.kubernetes.io/<mode>`` (enforce, audit, warn) name a level (privileged, baseline,
  restricted) and ``<mode>-version`` a policy version (``latest`` or ``v1.N``); without labels every mode is
  ``privileged:latest`` (the API server's default configuration).
- Pods (create, and updates that change an image): the enforce level refuses with 403 ``pods "x" is forbidden:
  violates PodSecurity "restricted:latest": <reason> (<detail>), ...``; the warn level admits with a ``Warning``
  header ``would violate PodSecurity ...`` (kubectl prints it); the audit level is only logged (there is no audit
  log here). Pods created by controllers (the Job controller) go through the same API path, so they are refused
  too and the controller records ``FailedCreate``.
- Workload objects with a pod template (Jobs, Deployments, ...): only warn and audit, as in Kubernetes (their
  pods are what enforce refuses).
- Namespaces: an invalid level or version label is refused with 422 on create (and on an update that changes it);
  a namespace that somehow carries one is enforced at ``restricted`` (fail closed) while warn and audit fail open.
  Raising a namespace's enforce level admits the change with warnings naming the existing pods that violate it.

Checks are evaluated per policy version by each check's first version; changes in a check's wording across
versions are not modelled (every version uses the current wording). Not modelled: exemptions, the user-namespace
relaxation, the AppArmor ``appArmorProfile`` field (only the annotation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

PREFIX: Final = "pod-security.kubernetes.io/"
MODES: Final = ("enforce", "audit", "warn")
LEVELS: Final = ("privileged", "baseline", "restricted")
PRIVILEGED, BASELINE, RESTRICTED = LEVELS
_VERSION_RE: Final = re.compile(r"^v1\.([0-9]|[1-9][0-9]*)$")
WORKLOAD_TEMPLATES: Final = {
    ("", "replicationcontrollers"): ("spec", "template"),
    ("", "podtemplates"): ("template",),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class LevelVersion:
    level: str
    minor: int | None = None
    """Policy version 1.<minor>; None is ``latest``."""

    def __str__(self) -> str:
        return f"{self.level}:{'latest' if self.minor is None else f'v1.{self.minor}'}"


@dataclass(frozen=True)
class Policy:
    enforce: LevelVersion
    audit: LevelVersion
    warn: LevelVersion


@dataclass(frozen=True)
class LabelError:
    label: str
    value: str
    detail: str


DEFAULT: Final = LevelVersion(PRIVILEGED)


def policy_for(labels: Mapping[str, str] | None) -> tuple[Policy, list[LabelError]]:
    """The namespace's policy (``api.PolicyToEvaluate``): a valid policy always, plus the label errors."""
    labels = labels or {}
    errors: list[LabelError] = []
    chosen: dict[str, LevelVersion] = {}
    for mode in MODES:
        level, minor = DEFAULT.level, DEFAULT.minor
        key = PREFIX + mode
        if key in labels:
            level = labels[key]
            if level not in LEVELS:
                errors.append(LabelError(key, level, "must be one of privileged, baseline, restricted"))
                level = RESTRICTED if mode == "enforce" else PRIVILEGED  # enforce fails closed, warn/audit open
        vkey = f"{key}-version"
        if vkey in labels:
            version = labels[vkey]
            match = _VERSION_RE.match(version)
            if version == "latest":
                minor = None
            elif match:
                minor = int(match.group(1))
            else:
                errors.append(LabelError(vkey, version, 'must be "latest" or "v1.x"'))
                minor = None
        chosen[mode] = LevelVersion(level, minor)
    return Policy(**chosen), errors


# ------------------------------------------------------------------------------------------------- helpers


def _plural(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def _quote(items: list[str]) -> str:
    return ", ".join(f'"{i}"' for i in items)


def _use(noun: str, names: list[str], what: str, things: list[str]) -> str:
    """``containers "a", "b" use probe or lifecycle host "h"``: kube-apiserver's wording, singular or plural."""
    return (
        f"{_plural(noun, noun + 's', len(names))} {_quote(names)} {_plural('uses', 'use', len(names))} "
        f"{_plural(what, what + 's', len(things))} {_quote(things)}"
    )


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(group) or []


def _sc(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


def _pod_sc(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.get("securityContext") or {}


def _names(containers: list[Mapping[str, Any]]) -> str:
    names = [str(c.get("name", "")) for c in containers]
    return f"{_plural('container', 'containers', len(names))} {_quote(names)}"


def _setters(pod_bad: bool, containers: list[Mapping[str, Any]]) -> str:
    parts = (["pod"] if pod_bad else []) + ([_names(containers)] if containers else [])
    return " and ".join(parts)


Result = tuple[str, str] | None
"""(forbidden reason, detail) of a failed check, None when it passes."""


# ------------------------------------------------------------------------------------------------- baseline


def _app_armor(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    prefix = "container.apparmor.security.beta.kubernetes.io/"
    bad = sorted(
        f'{k}="{v}"'
        for k, v in (meta.get("annotations") or {}).items()
        if k.startswith(prefix) and v and v != "runtime/default" and not v.startswith("localhost/")
    )
    if bad:
        return _plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(bad)), ", ".join(bad)
    return None


BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)


def _capabilities_baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad, caps = [], set()
    for c in _containers(spec):
        extra = [x for x in (_sc(c).get("capabilities") or {}).get("add") or [] if x not in BASELINE_CAPABILITIES]
        if extra:
            bad.append(c)
            caps.update(extra)
    if bad:
        detail = f"{_names(bad)} must not include {_quote(sorted(caps))} in securityContext.capabilities.add"
        return "non-default capabilities", detail
    return None


def _host_namespaces(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    used = sorted(f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k))
    return ("host namespaces", ", ".join(used)) if used else None


def _host_path_volumes(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    names = [str(v.get("name")) for v in spec.get("volumes") or [] if "hostPath" in v]
    if names:
        return "hostPath volumes", f"{_plural('volume', 'volumes', len(names))} {_quote(names)}"
    return None


def _host_ports(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad, ports = [], set()
    for c in _containers(spec):
        used = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            bad.append(c)
            ports.update(used)
    if bad:
        found = sorted(ports)
        detail = (
            f"{_names(bad)} {_plural('uses', 'use', len(bad))} "
            f"{_plural('hostPort', 'hostPorts', len(found))} {', '.join(found)}"
        )
        return "hostPort", detail
    return None


def _probe_hosts(handler: Mapping[str, Any] | None) -> list[str]:
    handler = handler or {}
    return [
        str(h) for h in ((handler.get("httpGet") or {}).get("host"), (handler.get("tcpSocket") or {}).get("host")) if h
    ]


def _host_probes(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad: set[str] = set()
    hosts: set[str] = set()
    for c in _containers(spec):
        lifecycle = c.get("lifecycle") or {}
        for handler in (
            c.get("livenessProbe"),
            c.get("readinessProbe"),
            c.get("startupProbe"),
            lifecycle.get("postStart"),
            lifecycle.get("preStop"),
        ):
            found = _probe_hosts(handler)
            if found:
                bad.add(str(c.get("name", "")))
                hosts.update(found)
    if bad:
        return "probe or lifecycle host", _use("container", sorted(bad), "probe or lifecycle host", sorted(hosts))
    return None


def _privileged(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad = [c for c in _containers(spec) if _sc(c).get("privileged") is True]
    return ("privileged", f"{_names(bad)} must not set securityContext.privileged=true") if bad else None


def _proc_mount(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad = [c for c in _containers(spec) if _sc(c).get("procMount") not in (None, "Default")]
    if bad:
        kinds = sorted({str(_sc(c)["procMount"]) for c in bad})
        return "procMount", f"{_names(bad)} must not set securityContext.procMount to {_quote(kinds)}"
    return None


SELINUX_TYPES: Final = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def _se_linux(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    types: set[str] = set()
    user = role = False

    def invalid(options: Mapping[str, Any] | None) -> bool:
        nonlocal user, role
        if options is None:
            return False
        bad = False
        if options.get("type", "") not in SELINUX_TYPES:
            types.add(str(options.get("type")))
            bad = True
        if options.get("user"):
            user = bad = True
        if options.get("role"):
            role = bad = True
        return bad

    pod_bad = invalid(_pod_sc(spec).get("seLinuxOptions"))
    bad = [c for c in _containers(spec) if invalid(_sc(c).get("seLinuxOptions"))]
    if not (pod_bad or bad):
        return None
    data = []
    if types:
        data.append(f"{_plural('type', 'types', len(types))} {_quote(sorted(types))}")
    if user:
        data.append("user may not be set")
    if role:
        data.append("role may not be set")
    return "seLinuxOptions", f"{_setters(pod_bad, bad)} set forbidden securityContext.seLinuxOptions: {'; '.join(data)}"


def _seccomp_type(sc: Mapping[str, Any]) -> str | None:
    profile = sc.get("seccompProfile")
    return None if profile is None else str(profile.get("type"))


def _seccomp_bad(value: str | None) -> bool:
    return value is not None and value not in ("RuntimeDefault", "Localhost")


def _seccomp_baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    pod_type = _seccomp_type(_pod_sc(spec))
    values = {pod_type} if _seccomp_bad(pod_type) else set()
    bad = [c for c in _containers(spec) if _seccomp_bad(_seccomp_type(_sc(c)))]
    values.update(str(_seccomp_type(_sc(c))) for c in bad)
    if _seccomp_bad(pod_type) or bad:
        detail = f"{_setters(_seccomp_bad(pod_type), bad)} must not set securityContext.seccompProfile.type to "
        return "seccompProfile", detail + _quote(sorted(str(v) for v in values))
    return None


SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    }
)


def _sysctls(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad = [str(s.get("name")) for s in _pod_sc(spec).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    return ("forbidden sysctls", ", ".join(bad)) if bad else None


def _volume_types(volumes: list[Mapping[str, Any]], allowed: Callable[[str], bool]) -> Result:
    bad, kinds = [], set()
    for volume in volumes:
        kind = next((k for k in volume if k != "name"), "unknown")
        if not allowed(kind):
            bad.append(str(volume.get("name")))
            kinds.add("cephfs" if kind == "cephFS" else kind)
    if bad:
        return "restricted volume types", _use("volume", bad, "restricted volume type", sorted(kinds))
    return None


def _volumes_baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    return _volume_types(spec.get("volumes") or [], lambda kind: kind != "gitRepo")


def _windows_host_process(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    def host(sc: Mapping[str, Any]) -> bool:
        return (sc.get("windowsOptions") or {}).get("hostProcess") is True

    pod_bad = host(_pod_sc(spec))
    bad = [c for c in _containers(spec) if host(_sc(c))]
    if pod_bad or bad:
        return "hostProcess", f"{_setters(pod_bad, bad)} must not set securityContext.windowsOptions.hostProcess=true"
    return None


# ------------------------------------------------------------------------------------------------- restricted


def _allow_privilege_escalation(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    bad = [c for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return (
            "allowPrivilegeEscalation != false",
            f"{_names(bad)} must set securityContext.allowPrivilegeEscalation=false",
        )
    return None


def _capabilities_restricted(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    missing, adding, caps = [], [], set()
    for c in _containers(spec):
        capabilities = _sc(c).get("capabilities")
        if capabilities is None:
            missing.append(c)
            continue
        if "ALL" not in (capabilities.get("drop") or []):
            missing.append(c)
        extra = [x for x in capabilities.get("add") or [] if x != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c)
            caps.update(extra)
    details = []
    if missing:
        details.append(f'{_names(missing)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_names(adding)} must not include {_quote(sorted(caps))} in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


RESTRICTED_VOLUMES: Final = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


def _restricted_volumes(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    return _volume_types(spec.get("volumes") or [], lambda kind: kind in RESTRICTED_VOLUMES)


def _run_as_non_root(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    pod_value = _pod_sc(spec).get("runAsNonRoot")
    explicit = [c for c in _containers(spec) if _sc(c).get("runAsNonRoot") is False]
    implicit = [c for c in _containers(spec) if _sc(c).get("runAsNonRoot") is None and pod_value is not True]
    if pod_value is False or explicit:
        return (
            "runAsNonRoot != true",
            f"{_setters(pod_value is False, explicit)} must not set securityContext.runAsNonRoot=false",
        )
    if implicit:
        return "runAsNonRoot != true", f"pod or {_names(implicit)} must set securityContext.runAsNonRoot=true"
    return None


def _run_as_user(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    pod_bad = _pod_sc(spec).get("runAsUser") == 0
    bad = [c for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if pod_bad or bad:
        return "runAsUser=0", f"{_setters(pod_bad, bad)} must not set runAsUser=0"
    return None


def _seccomp_restricted(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> Result:
    found = _seccomp_baseline(meta, spec)
    if found is not None:
        return found
    pod_set = _seccomp_type(_pod_sc(spec)) is not None
    implicit = [c for c in _containers(spec) if _seccomp_type(_sc(c)) is None and not pod_set]
    if implicit:
        detail = (
            f'pod or {_names(implicit)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"'
        )
        return "seccompProfile", detail
    return None


# ------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Check:
    id: str
    level: str
    since: int
    """First policy version (1.<since>) that has this check."""
    run: Callable[[Mapping[str, Any], Mapping[str, Any]], Result]
    overrides: tuple[str, ...] = ()
    """Baseline checks this restricted check replaces at the restricted level."""


CHECKS: Final = (  # in the order of the Go package's files, which is the order of the reasons in a message
    Check("allowPrivilegeEscalation", RESTRICTED, 8, _allow_privilege_escalation),
    Check("appArmorProfile", BASELINE, 0, _app_armor),
    Check("capabilities_baseline", BASELINE, 0, _capabilities_baseline),
    Check("capabilities_restricted", RESTRICTED, 22, _capabilities_restricted, ("capabilities_baseline",)),
    Check("hostNamespaces", BASELINE, 0, _host_namespaces),
    Check("hostPathVolumes", BASELINE, 0, _host_path_volumes),
    Check("hostPorts", BASELINE, 0, _host_ports),
    Check("hostProbesAndHostLifecycle", BASELINE, 34, _host_probes),
    Check("privileged", BASELINE, 0, _privileged),
    Check("procMount", BASELINE, 0, _proc_mount),
    Check("restrictedVolumes", RESTRICTED, 0, _restricted_volumes, ("hostPathVolumes", "baselineVolumes")),
    Check("runAsNonRoot", RESTRICTED, 0, _run_as_non_root),
    Check("runAsUser", RESTRICTED, 23, _run_as_user),
    Check("seLinuxOptions", BASELINE, 0, _se_linux),
    Check("seccompProfile_baseline", BASELINE, 19, _seccomp_baseline),
    Check("seccompProfile_restricted", RESTRICTED, 19, _seccomp_restricted, ("seccompProfile_baseline",)),
    Check("sysctls", BASELINE, 0, _sysctls),
    Check("baselineVolumes", BASELINE, 31, _volumes_baseline),
    Check("windowsHostProcess", BASELINE, 0, _windows_host_process),
)


def _applies(check: Check, lv: LevelVersion) -> bool:
    return lv.minor is None or lv.minor >= check.since


def evaluate(lv: LevelVersion, meta: Mapping[str, Any], spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The failed checks of ``lv`` for one pod (or pod template), in Kubernetes' order."""
    if lv.level == PRIVILEGED:
        return []
    active = [c for c in CHECKS if _applies(c, lv) and (c.level == BASELINE or lv.level == RESTRICTED)]
    replaced = {o for c in active if c.level == RESTRICTED for o in c.overrides}
    ordered = [c for c in active if c.level == BASELINE and c.id not in replaced]
    ordered += [c for c in active if c.level == RESTRICTED]
    return [result for c in ordered if (result := c.run(meta, spec)) is not None]


def detail(results: list[tuple[str, str]]) -> str:
    """``AggregateCheckResult.ForbiddenDetail``: ``reason (detail), reason, ...``."""
    return ", ".join(f"{reason} ({info})" if info else reason for reason, info in results)


# ------------------------------------------------------------------------------------------------- admission


@dataclass
class Decision:
    forbidden: str | None = None
    """The 403 message (``violates PodSecurity ...``), None when admitted."""
    warnings: list[str] | None = None


def admit_pod(
    labels: Mapping[str, str] | None, meta: Mapping[str, Any], spec: Mapping[str, Any], *, enforce: bool
) -> Decision:
    """``Admission.EvaluatePod``: enforce (pods only), then audit (logged), then warn (only if admitted)."""
    policy, errors = policy_for(labels)
    decision = Decision(warnings=[])
    cache: dict[LevelVersion, list[tuple[str, str]]] = {}

    def results(lv: LevelVersion) -> list[tuple[str, str]]:
        if lv not in cache:
            cache[lv] = evaluate(lv, meta, spec)
        return cache[lv]

    if errors:
        log.info("PodSecurity: failed to parse namespace labels: %s", errors)
    if enforce and results(policy.enforce):
        decision.forbidden = f'violates PodSecurity "{policy.enforce}": {detail(results(policy.enforce))}'
    if results(policy.audit):
        log.info(
            'PodSecurity audit: %s would violate PodSecurity "%s": %s',
            meta.get("name"),
            policy.audit,
            detail(results(policy.audit)),
        )
    if decision.forbidden is None and results(policy.warn):
        assert decision.warnings is not None
        decision.warnings.append(f'would violate PodSecurity "{policy.warn}": {detail(results(policy.warn))}')
    return decision


def template_of(group: str, plural: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod template of a workload object, or None (not a workload, or no template)."""
    path = WORKLOAD_TEMPLATES.get((group, plural))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = (node or {}).get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def namespace_warnings(
    namespace: str, old: LevelVersion, new: LevelVersion, pods: Sequence[Mapping[str, Any]]
) -> list[str]:
    """``EvaluatePodsInNamespace``: warnings about existing pods when a namespace's enforce level is raised."""
    if new == old or new.level == PRIVILEGED:
        return []
    if new.minor == old.minor and LEVELS.index(new.level) <= LEVELS.index(old.level):
        return []
    counts: dict[str, list[str]] = {}
    order: list[str] = []
    for pod in pods:
        found = evaluate(new, pod.get("metadata") or {}, pod.get("spec") or {})
        if not found:
            continue
        reason = ", ".join(r for r, _ in found)
        if reason not in counts:
            counts[reason] = []
            order.append(reason)
        counts[reason].append(str((pod.get("metadata") or {}).get("name")))
    if not order:
        return []
    out = [f'existing pods in namespace "{namespace}" violate the new PodSecurity enforce level "{new}"']
    decorated = []
    for reason in order:
        names = sorted(counts[reason])
        others = len(names) - 1
        suffix = "" if others == 0 else f" (and {others} other pod{'s' if others > 1 else ''})"
        decorated.append(f"{names[0]}{suffix}: {reason}")
    return out + sorted(decorated)
