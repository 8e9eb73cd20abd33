"""The HTTP surface: URL routing, content negotiation, watch streaming and logs, on aiohttp.

Why: kopf, kubectl and the kubernetes client only ever see this layer, so it carries the wire-level
details they depend on: protobuf request bodies from typed client-go clients (``protobuf.py``; answers
are JSON), 201 on create, ``kind: Status`` errors, JSON (never octet-stream) watch streams
of newline-delimited events, ``ERROR``/410 events for expired resourceVersions, ``BOOKMARK`` events
(including the ``k8s.io/initial-events-end`` one of streaming lists), ``as=Table`` answers, ``Warning``
headers, and ``text/plain`` Pod logs with ``follow``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import yaml
from aiohttp import web

from ..errors import ApiError, bad_request, method_not_allowed, not_found, unsupported_media_type
from . import discovery, fieldmanager, openapi, protobuf, tables
from .api import Api, now_rfc3339
from .resources import ResourceType
from .selectors import object_predicate

JSON_TYPE = "application/json"


class LogProvider(Protocol):
    """Serves ``pods/log``; implemented by the kubelet."""

    def stream_logs(
        self,
        pod: dict[str, Any],
        container: str,
        *,
        follow: bool,
        previous: bool,
        tail_lines: int | None,
        timestamps: bool,
        since_seconds: int | None,
        limit_bytes: int | None,
    ) -> AsyncIterator[bytes]: ...


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None  # None: all namespaces (or cluster-scoped)
    name: str | None
    subresource: str | None


def _quoted(text: str) -> str:
    """The inside of an RFC 7230 quoted-string (client-go's warning header parser unescapes ``\\"`` and ``\\\\``)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 - "{_quoted(w)}"' for w in warnings)
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=JSON_TYPE,
        headers=headers,
    )


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _refuse_protobuf_patch(content_type: str) -> None:
    """Patches are JSON or YAML in Kubernetes too: a protobuf patch type does not exist."""
    if "protobuf" in content_type:
        raise unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        )


def _check_acceptable(request: web.Request) -> None:
    """Answers are JSON (or text for logs): a client that accepts only protobuf gets 406, as kube-apiserver answers
    an Accept it cannot serve. client-go always lists application/json after protobuf, so it never sees this."""
    accept = request.headers.get("Accept", "")
    if not accept:
        return
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if all(t == protobuf.PROTOBUF_TYPE or t.endswith("+protobuf") for t in types):
        raise ApiError(
            406,
            "NotAcceptable",
            f"only the following media types are accepted: {JSON_TYPE}, application/yaml "
            f"(the asyncdiff dev cluster decodes protobuf requests but answers JSON)",
        )


def _manager(request: web.Request) -> str | None:
    return fieldmanager.manager_from(request.query.get("fieldManager"), request.headers.get("User-Agent"))


def _truthy(value: str | None) -> bool:
    return value in ("1", "true", "True")


def _int(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise bad_request(f"invalid integer {value!r}") from None


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _request_key(request: web.Request, t: Target) -> tuple[str, str, str, str, str]:
    """(client, verb, group, resource, subresource) of one request; the client is the User-Agent's first product
    token (``kopf``, ``kubectl``, ``OpenAPI-Generator``...), as the API server's audit log records it."""
    agent = request.headers.get("User-Agent", "").split(" ", 1)[0].split("/", 1)[0] or "unknown"
    if request.method == "GET":
        verb = "get" if t.name is not None else ("watch" if _truthy(request.query.get("watch")) else "list")
    else:
        verb = _VERBS.get(request.method, request.method.lower())
    return agent, verb, t.rt.group, t.rt.plural, t.subresource or ""


def request_metrics(counts: Counter[tuple[str, str, str, str, str]]) -> str:
    """``apiserver_request_total`` in the Prometheus text format (real API servers label it by verb, group,
    resource and subresource; ``client`` is this emulator's addition, so tests can attribute calls)."""
    lines = ["# TYPE apiserver_request_total counter"]
    for (client, verb, group, resource, sub), n in sorted(counts.items()):
        labels = f'client="{client}",verb="{verb}",group="{group}",resource="{resource}",subresource="{sub}"'
        lines.append(f"apiserver_request_total{{{labels}}} {n}")
    return "\n".join(lines) + "\n"


class HttpFrontend:
    """Translates HTTP requests to ``Api`` calls. ``server_address`` is used by /api discovery."""

    def __init__(self, api: Api, *, log_provider: LogProvider | None = None, bookmark_interval: float = 30.0) -> None:
        self.api = api
        self.log_provider = log_provider
        self.bookmark_interval = bookmark_interval
        self.server_address = "127.0.0.1:0"
        self.stopping = asyncio.Event()
        self.requests: Counter[tuple[str, str, str, str, str]] = Counter()
        """Resource requests served, by (client, verb, group, resource, subresource): ``GET /metrics``."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # ------------------------------------------------------------------ dispatch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            return _error(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug here must answer 500, not kill the server
            return _error(ApiError(500, "InternalError", f"Internal error occurred: {exc!r}"))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        method = request.method
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(discovery.SERVER_VERSION)
        if path == "/metrics":
            return web.Response(text=request_metrics(self.requests), content_type="text/plain")
        if parts[:1] == ["openapi"]:
            return self._openapi(request, parts[1:])
        if path == "/api":
            return _json(discovery.api_versions(self.server_address))
        if path == "/apis":
            return _json(discovery.api_group_list(self.api.resources))
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            if len(parts) == 2:
                body = discovery.api_group(self.api.resources, parts[1])
                if body is None:
                    raise not_found("", "", parts[1])
                return _json(body)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            listing = discovery.resource_list(self.api.resources, group, version)
            if listing is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(listing)
        target = self._resolve(group, version, rest)
        self.requests[_request_key(request, target)] += 1
        _check_acceptable(request)
        if method == "GET":
            return await self._get(request, target)
        if method == "POST":
            return await self._post(request, target)
        if method == "PUT":
            return await self._put(request, target)
        if method == "PATCH":
            return await self._patch(request, target)
        if method == "DELETE":
            return await self._delete(request, target)
        raise method_not_allowed(f"method {method} is not supported")

    def _resolve(self, group: str, version: str, rest: list[str]) -> Target:
        reg = self.api.resources
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and reg.has_namespaced_plural(group, version, rest[2]):
            namespace, rest = rest[1], rest[2:]
        elif rest[0] == "watch":
            raise ApiError(404, "NotFound", "legacy /watch paths are not served; use ?watch=true")
        rt = reg.get(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3 or (sub is not None and sub not in rt.subresources):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(rt, namespace if rt.namespaced else None, name, sub)

    # ------------------------------------------------------------------ openapi

    def _openapi(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        reg = self.api.resources
        if rest == ["v2"]:
            if "protobuf" in request.headers.get("Accept", ""):
                return web.Response(body=b"", content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            return _json(openapi.v2_document_json())
        if rest == ["v3"]:
            return _json(openapi.v3_index(reg))
        if rest[:1] == ["v3"] and len(rest) >= 3:
            if rest[1] == "api":
                doc = openapi.gv_document(reg, "", rest[2])
            else:
                doc = openapi.gv_document(reg, rest[2], rest[3]) if len(rest) >= 4 else None
            if doc is not None:
                return _json(doc)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # ------------------------------------------------------------------ verbs

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.headers.get("Content-Type", JSON_TYPE)
        if ctype.split(";")[0].strip() == protobuf.PROTOBUF_TYPE:
            return protobuf.decode_body(raw)
        if "yaml" in ctype:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise bad_request(f"error decoding YAML: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"error decoding JSON: {exc}") from None

    def _render(self, request: web.Request, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if _wants_table(request):
            return tables.to_table(rt, [obj], include_object=request.query.get("includeObject", "Metadata"))
        return obj

    async def _get(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        if t.name is None:
            if _truthy(q.get("watch")):
                return await self._watch(request, t)
            listing = self.api.list(
                t.rt,
                t.namespace,
                label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"),
                limit=_int(q.get("limit")),
                continue_token=q.get("continue"),
            )
            if _wants_table(request):
                return _json(
                    tables.to_table(
                        t.rt,
                        listing["items"],
                        include_object=q.get("includeObject", "Metadata"),
                        list_meta=listing["metadata"],
                    )
                )
            return _json(listing)
        ns = t.namespace or ""
        if t.subresource == "log":
            return await self._logs(request, t)
        obj = self.api.get(t.rt, ns, t.name)
        return _json(self._render(request, t.rt, obj))

    async def _post(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        body = await self._body(request)
        ns = t.namespace or ""
        if t.name is not None:
            if t.subresource == "eviction":
                return _json(self._evict(t, body), 201)
            if t.subresource == "binding":
                return _json(self._bind(t, body), 201)
            raise method_not_allowed("POST is only supported on collections")
        result = self.api.create(
            t.rt,
            ns,
            body,
            dry_run=q.get("dryRun") == "All",
            field_validation=q.get("fieldValidation", ""),
            field_manager=_manager(request),
        )
        return _json(result.obj, 201, result.warnings)

    async def _put(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.name is None:
            raise method_not_allowed("PUT is only supported on objects")
        q = request.query
        body = await self._body(request)
        sub = t.subresource
        if sub == "finalize":
            # namespaces/finalize replaces spec.finalizers
            current = self.api.get(t.rt, "", t.name)
            current["spec"] = (body or {}).get("spec", {})
            result = self.api.update(t.rt, "", t.name, current, require_rv=False)
            return _json(result.obj, 200)
        result = self.api.update(
            t.rt,
            t.namespace or "",
            t.name,
            body,
            subresource=sub,
            dry_run=q.get("dryRun") == "All",
            field_validation=q.get("fieldValidation", ""),
            field_manager=_manager(request),
        )
        return _json(result.obj, 201 if result.created else 200, result.warnings)

    async def _patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        if t.name is None:
            raise method_not_allowed("PATCH is only supported on objects")
        q = request.query
        raw = await request.read()
        _refuse_protobuf_patch(request.headers.get("Content-Type", ""))
        result = self.api.patch(
            t.rt,
            t.namespace or "",
            t.name,
            request.headers.get("Content-Type", "application/merge-patch+json"),
            raw,
            subresource=t.subresource,
            dry_run=q.get("dryRun") == "All",
            field_validation=q.get("fieldValidation", ""),
            force=_truthy(q.get("force")),
            field_manager=_manager(request),
        )
        return _json(result.obj, 201 if result.created else 200, result.warnings)

    def _delete_options(self, request: web.Request, body: Any) -> dict[str, Any]:
        options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
        q = request.query
        if "gracePeriodSeconds" in q:
            options["gracePeriodSeconds"] = _int(q["gracePeriodSeconds"])
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "orphanDependents" in q:
            options["orphanDependents"] = _truthy(q["orphanDependents"])
        return options

    async def _delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        body = await self._body(request)
        options = self._delete_options(request, body)
        dry_run = request.query.get("dryRun") == "All" or options.get("dryRun") == ["All"]
        if t.name is None:
            result = self.api.delete_collection(
                t.rt,
                t.namespace,
                options,
                label_selector=request.query.get("labelSelector"),
                field_selector=request.query.get("fieldSelector"),
                dry_run=dry_run,
            )
            return _json(result)
        obj = self.api.delete(t.rt, t.namespace or "", t.name, options, dry_run=dry_run)
        return _json(obj, 200)

    # ------------------------------------------------------------------ pod subresources

    def _evict(self, t: Target, body: Any) -> dict[str, Any]:
        assert t.name is not None
        ns = t.namespace or ""
        pod = self.api.get(t.rt, ns, t.name)
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting",
                "lastTransitionTime": now_rfc3339(),
            }
        )
        status["conditions"] = conditions
        self.api.update(t.rt, ns, t.name, pod, subresource="status")
        options = (body or {}).get("deleteOptions") or {}
        self.api.delete(t.rt, ns, t.name, options)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def _bind(self, t: Target, body: Any) -> dict[str, Any]:
        assert t.name is not None
        node = ((body or {}).get("target") or {}).get("name")
        if not node:
            raise bad_request("binding target name is required")
        pod = self.api.get(t.rt, t.namespace or "", t.name)
        if pod["spec"].get("nodeName"):
            raise ApiError(409, "Conflict", f'pod {t.name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        pod["spec"]["nodeName"] = node
        self.api.update(t.rt, t.namespace or "", t.name, pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    async def _logs(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        pod = self.api.get(t.rt, t.namespace or "", t.name)
        q = request.query
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        init_names = [c["name"] for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = q.get("container")
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {t.name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in names + init_names:
            raise bad_request(f"container {container} is not valid for pod {t.name}")
        if self.log_provider is None:
            raise bad_request(f'container "{container}" in pod "{t.name}" is waiting to start: no kubelet')
        stream = self.log_provider.stream_logs(
            pod,
            container,
            follow=_truthy(q.get("follow")),
            previous=_truthy(q.get("previous")),
            tail_lines=_int(q.get("tailLines")),
            timestamps=_truthy(q.get("timestamps")),
            since_seconds=_int(q.get("sinceSeconds")),
            limit_bytes=_int(q.get("limitBytes")),
        )
        iterator = stream.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = b""
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for chunk in iterator:
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        store = self.api.store
        predicate = object_predicate(q.get("labelSelector"), q.get("fieldSelector"))
        rv_param = q.get("resourceVersion") or ""
        send_initial = _truthy(q.get("sendInitialEvents"))
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        timeout = _int(q.get("timeoutSeconds")) or 1800
        as_table = _wants_table(request)
        include = q.get("includeObject", "Metadata")
        events: list[tuple[str, dict[str, Any]]] = []
        error: ApiError | None = None
        watcher = None
        namespace = t.namespace
        if rv_param in ("", "0") or send_initial:
            items = [o for o in store.items(t.rt.storage_key, namespace) if predicate(o)]
            events = [("ADDED", o) for o in items]
            watcher, _ = store.watch([t.rt.storage_key], namespace, predicate)
        else:
            try:
                since = int(rv_param)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {rv_param!r}") from None
            try:
                watcher, events = store.watch([t.rt.storage_key], namespace, predicate, since=since)
            except ApiError as exc:
                error = exc
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE, "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        headers_sent = False

        async def send(kind: str, obj: dict[str, Any]) -> None:
            nonlocal headers_sent
            out: dict[str, Any]
            if kind in ("ERROR", "BOOKMARK"):
                out = obj
            else:
                out = self.api.output(t.rt, obj)
                if as_table:
                    out = tables.to_table(t.rt, [out], include_object=include, headers=not headers_sent)
                    headers_sent = True
            await response.write(json.dumps({"type": kind, "object": out}, separators=(",", ":")).encode() + b"\n")

        def bookmark(initial_end: bool = False) -> dict[str, Any]:
            meta: dict[str, Any] = {"resourceVersion": str(store.rv)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return {"kind": t.rt.kind, "apiVersion": t.rt.group_version, "metadata": meta}

        try:
            if error is not None:
                await send("ERROR", error.status())
                await response.write_eof()
                return response
            assert watcher is not None
            for kind, obj in events:
                await send(kind, obj)
            if send_initial and bookmarks:
                await send("BOOKMARK", bookmark(initial_end=True))
            deadline = time.monotonic() + timeout
            while not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), min(left, self.bookmark_interval))
                except TimeoutError:
                    if bookmarks:
                        await send("BOOKMARK", bookmark())
                    continue
                if item is None:
                    break
                kind, obj, _ = item
                await send(kind, obj)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if watcher is not None:
                watcher.close()
        return response
