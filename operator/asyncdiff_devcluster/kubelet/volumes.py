"""Volumes as folders in the per-pod directory, and how container paths map onto them.

Why: containers see ``mountPath``s (``/data``, ``/etc/config``); local processes cannot. Each volume is
materialised under ``<pod dir>/volumes/<volume name>`` (emptyDir, configMap, secret, downwardAPI,
projected; hostPath is used in place; a persistentVolumeClaim is a folder kept per claim under the
cluster's state dir). Each container then gets:

* its ``mountPath`` prefixes rewritten to the local folder (``subPath`` honoured) wherever they start a
  path in ``command``, ``args``, env values and ``workingDir`` (``/data/out.png`` ->
  ``<pod dir>/volumes/data/out.png``; ``--out=/data`` works too);
* ``ASYNCDIFF_MOUNTS``: a JSON object {mountPath: local folder}, for paths a program builds at run time;
* ``ASYNCDIFF_POD_DIR``: the per-pod folder;
* ``ASYNCDIFF_TERMINATION_LOG``: the local file standing in for ``terminationMessagePath``
  (``/dev/termination-log`` by default; that path is rewritten to it as well). What the process writes
  there becomes ``state.terminated.message``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .env import EnvError, field_value, resource_value


class VolumeError(Exception):
    """A volume source is missing (a ConfigMap or Secret that does not exist yet); ``volume`` names the volume."""

    def __init__(self, message: str, volume: str = "") -> None:
        super().__init__(message)
        self.volume = volume


def _write(path: Path, data: bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)


def _project_keys(
    target: Path, data: Mapping[str, bytes], items: list[dict[str, Any]] | None, default_mode: int | None
) -> None:
    if items:
        for item in items:
            key = item.get("key", "")
            if key not in data:
                continue
            _write(target / item.get("path", key), data[key], item.get("mode", default_mode))
    else:
        for key, value in data.items():
            _write(target / key, value, default_mode)


def _configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return out


def _secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


class Lookup:
    """Reads ConfigMaps/Secrets of the Pod's namespace (the kubelet passes the store's getter)."""

    def __init__(self, getter: Any, namespace: str) -> None:
        self._get = getter
        self.namespace = namespace

    def configmap(self, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self._get(("", "configmaps"), self.namespace, name)
        return obj

    def secret(self, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = self._get(("", "secrets"), self.namespace, name)
        return obj


def _downward(target: Path, source: Mapping[str, Any], pod: Mapping[str, Any], default_mode: int | None) -> None:
    for item in source.get("items") or []:
        try:
            if item.get("fieldRef"):
                value = field_value(pod, item["fieldRef"].get("fieldPath", ""))
            elif item.get("resourceFieldRef"):
                value = resource_value(pod, item["resourceFieldRef"])
            else:
                continue
        except EnvError as exc:
            raise VolumeError(str(exc)) from None
        _write(target / item["path"], value.encode(), item.get("mode", default_mode))


def materialize(pod: Mapping[str, Any], pod_dir: Path, lookup: Lookup, state_dir: Path) -> dict[str, Path]:
    """Create every volume of ``pod``; returns volume name -> local folder. A missing source raises VolumeError
    naming the volume."""
    out: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume["name"]
        target = pod_dir / "volumes" / name
        if "hostPath" in volume:
            host = Path(volume["hostPath"].get("path", "/"))
            if volume["hostPath"].get("type") in ("DirectoryOrCreate",):
                host.mkdir(parents=True, exist_ok=True)
            out[name] = host
            continue
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName", name)
            folder = state_dir / "pvcs" / lookup.namespace / claim
            folder.mkdir(parents=True, exist_ok=True)
            out[name] = folder
            continue
        target.mkdir(parents=True, exist_ok=True)
        out[name] = target
        if "configMap" in volume:
            src = volume["configMap"]
            cm = lookup.configmap(src.get("name", ""))
            if cm is None:
                if src.get("optional"):
                    continue
                raise VolumeError(f'configmap "{src.get("name")}" not found', name)
            _project_keys(target, _configmap_data(cm), src.get("items"), src.get("defaultMode"))
        elif "secret" in volume:
            src = volume["secret"]
            secret = lookup.secret(src.get("secretName", ""))
            if secret is None:
                if src.get("optional"):
                    continue
                raise VolumeError(f'secret "{src.get("secretName")}" not found', name)
            _project_keys(target, _secret_data(secret), src.get("items"), src.get("defaultMode"))
        elif "downwardAPI" in volume:
            _downward(target, volume["downwardAPI"], pod, volume["downwardAPI"].get("defaultMode"))
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode")
            for source in volume["projected"].get("sources") or []:
                if "configMap" in source:
                    cm = lookup.configmap(source["configMap"].get("name", ""))
                    if cm is None and not source["configMap"].get("optional"):
                        raise VolumeError(f'configmap "{source["configMap"].get("name")}" not found', name)
                    if cm is not None:
                        _project_keys(target, _configmap_data(cm), source["configMap"].get("items"), mode)
                elif "secret" in source:
                    secret = lookup.secret(source["secret"].get("name", ""))
                    if secret is None and not source["secret"].get("optional"):
                        raise VolumeError(f'secret "{source["secret"].get("name")}" not found', name)
                    if secret is not None:
                        _project_keys(target, _secret_data(secret), source["secret"].get("items"), mode)
                elif "downwardAPI" in source:
                    _downward(target, source["downwardAPI"], pod, mode)
    return out


def container_mounts(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> dict[str, str]:
    """mountPath -> local path for one container (volumes it mounts that exist)."""
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        local = volumes.get(mount.get("name", ""))
        if local is None:
            continue
        sub = mount.get("subPath")
        if sub:
            local = local / sub
            if not local.exists() and not sub.endswith((".json", ".yaml", ".txt")):
                local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"].rstrip("/") or "/"] = str(local)
    return mounts


class PathRewriter:
    """Replaces container paths (mount points and the termination log path) with local ones."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = dict(mapping)
        if self.mapping:
            alternatives = "|".join(re.escape(p) for p in sorted(self.mapping, key=len, reverse=True))
            self._re: re.Pattern[str] | None = re.compile(rf"(?<![\w.~-])({alternatives})(?=/|$|[\s\"',;:=)\]])")
        else:
            self._re = None

    def __call__(self, text: str) -> str:
        if self._re is None:
            return text
        return self._re.sub(lambda m: self.mapping[m.group(1)], text)

    def env(self) -> str:
        return json.dumps(self.mapping, sort_keys=True)
