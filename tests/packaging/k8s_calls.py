"""A static scan of the operator's source for what it asks of the Kubernetes API: (apiGroup, resource, verb) triples.

Only the modules the operator process loads count (the import closure of ``asyncdiff_operator.main``): the user
CLI in the same package calls the API with the user's credentials, not the operator's.

Why static: the RBAC rules must cover every call on every code path, including ones no test reaches (TTL deletion,
multi-node Services). Two sources are scanned with ``ast``:

- kubernetes client calls: any ``<receiver>.<method>(...)`` whose method is an API method of
  ``kubernetes.client`` (CoreV1Api, BatchV1Api, CustomObjectsApi, EventsV1Api, ...). The HTTP method and URL come
  from the client's own ``_<method>_serialize`` (so ``read_namespaced_pod_log`` is ``get`` on ``pods/log``).
  When a method name exists on several API classes, the receiver decides (``client.XApi(...)`` or a module function
  returning one). CustomObjectsApi's ``group``/``plural`` arguments are evaluated in the calling module.
- kopf: resource handler decorators (``kopf.on.create``, ``kopf.timer``, ``kopf.daemon`` ... watch, list and patch
  the resource and its /status; ``kopf.on.event`` and ``kopf.index`` only watch and list) and event posting.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Triple = tuple[str, str, str]
STATEFUL_HANDLERS = {"create", "update", "delete", "resume", "field", "timer", "daemon"}
STATELESS_HANDLERS = {"event", "index"}
RESOURCELESS_HANDLERS = {"startup", "cleanup", "login", "probe", "mutate", "validate"}
EVENT_POSTERS = {"info", "warn", "event", "exception"}
FORBIDDEN = {"call_api", "DynamicClient"}  # API access the scan cannot attribute to a resource


@dataclass(frozen=True)
class Found:
    where: str  # module:line
    triple: Triple


@functools.cache
def api_methods() -> dict[str, list[type]]:
    """Method name -> the kubernetes.client API classes that define it."""
    import kubernetes.client.api as apis

    out: dict[str, list[type]] = {}
    for name in dir(apis):
        cls = getattr(apis, name)
        if not (name.endswith("Api") and inspect.isclass(cls)):
            continue
        for attr in dir(cls):
            if attr.startswith("_") or not hasattr(cls, f"_{attr}_serialize"):
                continue
            out.setdefault(attr, []).append(cls)
    return out


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _api_class_of(expr: ast.AST, factories: dict[str, str]) -> str | None:
    """The API class a receiver expression evaluates to: ``client.XApi(...)``, ``XApi(...)`` or ``factory()``."""
    if isinstance(expr, ast.Call):
        name = _dotted(expr.func).rsplit(".", 1)[-1]
        if name.endswith("Api"):
            return name
        return factories.get(name)
    return None


def _factories(trees: dict[str, ast.Module]) -> dict[str, str]:
    """Functions of the package that return ``client.XApi(...)``: name -> class name."""
    out: dict[str, str] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    cls = _api_class_of(ret.value, {})  # type: ignore[arg-type]
                    if cls:
                        out[node.name] = cls
    return out


def _namespace(module: Any, tree: ast.Module) -> dict[str, Any]:
    """The module's globals plus every name its function-local imports bind (constants imported lazily)."""
    namespace = dict(vars(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            exec(compile(ast.Module(body=[node], type_ignores=[]), module.__file__, "exec"), namespace)
    return namespace


def _evaluate(node: ast.AST, namespace: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name | ast.Attribute | ast.JoinedStr | ast.BinOp):
        return eval(compile(ast.Expression(node), "<scan>", "eval"), namespace)
    raise ValueError(f"cannot evaluate {ast.dump(node)}")


def _http(cls: type, method: str) -> tuple[str, str]:
    source = inspect.getsource(getattr(cls, f"_{method}_serialize"))
    http = re.search(r"method='(\w+)'", source)
    path = re.search(r"resource_path='([^']+)'", source)
    assert http and path, f"{cls.__name__}.{method}: no method/resource_path in its serializer"
    return http.group(1), path.group(1)


def client_triple(cls: type, method: str, call: ast.Call, namespace: dict[str, Any]) -> Triple:
    """(group, resource, verb) of one kubernetes client call."""
    http, path = _http(cls, method)
    params = list(inspect.signature(getattr(cls, method)).parameters)[1:]  # drop self
    bound = {name: arg for name, arg in zip(params, call.args, strict=False)}
    bound.update({kw.arg: kw.value for kw in call.keywords if kw.arg})
    for placeholder in ("group", "plural"):
        if "{" + placeholder + "}" in path:
            path = path.replace("{" + placeholder + "}", str(_evaluate(bound[placeholder], namespace)))
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    named = len(rest) > 1 and rest[1] == "{name}"
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    watch = any(kw.arg == "watch" and isinstance(kw.value, ast.Constant) and kw.value.value for kw in call.keywords)
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "GET": "get" if named else ("watch" if watch else "list"),
        "DELETE": "delete" if named else "deletecollection",
    }[http]
    return group, resource, verb


def _handler_resource(call: ast.Call, namespace: dict[str, Any]) -> tuple[str, str]:
    """(group, plural) of a kopf handler decorator: positional (group, version, plural) or keywords."""
    values = [_evaluate(a, namespace) for a in call.args]
    keys = ("group", "version", "plural")
    kwargs = {kw.arg: _evaluate(kw.value, namespace) for kw in call.keywords if kw.arg in keys}
    if len(values) == 3:
        return str(values[0]), str(values[2])
    if "plural" in kwargs:
        return str(kwargs.get("group", "")), str(kwargs["plural"])
    if len(values) == 1 and "." in str(values[0]):
        plural, _, group = str(values[0]).partition(".")
        return group, plural
    raise ValueError(f"cannot tell the resource of kopf handler {ast.dump(call)}")


def operator_modules(package_dir: Path, package: str, entry: str = "main") -> dict[str, ast.Module]:
    """The package's modules the operator process imports, starting from ``entry`` (stem -> tree).

    Modules the operator never loads (the user CLI ``usercli``, this RBAC list) run with someone else's
    credentials, so their calls are not the operator's to grant.
    """
    all_trees = {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(package_dir.glob("*.py"))}
    seen: dict[str, ast.Module] = {}
    todo = [entry]
    while todo:
        stem = todo.pop()
        if stem in seen or stem not in all_trees:
            continue
        seen[stem] = all_trees[stem]
        for node in ast.walk(all_trees[stem]):
            if isinstance(node, ast.ImportFrom) and node.module == package:
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{package}."):
                todo.append(str(node.module).split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}.")]
    return seen


def scan(package_dir: Path, package: str, status_subresources: set[str]) -> Iterator[Found]:
    """Every API need of the modules the operator process loads (``status_subresources``: plurals with /status)."""
    trees = operator_modules(package_dir, package)
    factories = _factories(trees)
    methods = api_methods()
    for stem, tree in trees.items():
        namespace = _namespace(importlib.import_module(f"{package}.{stem}"), tree)
        for node in ast.walk(tree):
            where = f"{stem}.py:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN and _dotted(node.value) not in ("", "self"):
                raise AssertionError(f"{where}: {_dotted(node)} is API access this scan cannot attribute; extend it")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            dotted = _dotted(node.func)
            if dotted.startswith("kopf.") and name in EVENT_POSTERS:
                yield Found(where, ("", "events", "create"))
            if name in methods:
                classes = methods[name]
                receiver = _api_class_of(node.func.value, factories)
                chosen = [c for c in classes if c.__name__ == receiver] if receiver else classes
                assert len(chosen) == 1, f"{where}: {name} on {receiver!r}: candidates {[c.__name__ for c in classes]}"
                yield Found(where, client_triple(chosen[0], name, node, namespace))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                if not isinstance(deco, ast.Call) or not _dotted(deco.func).startswith("kopf."):
                    continue
                kind = _dotted(deco.func).rsplit(".", 1)[-1]
                where = f"{stem}.py:{deco.lineno}"
                if kind in RESOURCELESS_HANDLERS:
                    continue
                assert kind in STATEFUL_HANDLERS | STATELESS_HANDLERS, f"{where}: unknown kopf decorator {kind}"
                group, plural = _handler_resource(deco, namespace)
                yield Found(where, (group, plural, "list"))
                yield Found(where, (group, plural, "watch"))
                yield Found(where, ("", "events", "create"))  # kopf posts handler failures as Events
                if kind in STATEFUL_HANDLERS:
                    yield Found(where, (group, plural, "patch"))  # finalizers, progress, diff-base
                    if plural in status_subresources:
                        yield Found(where, (group, f"{plural}/status", "patch"))
