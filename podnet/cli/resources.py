"""kubectl-like commands on API objects: apply, get, describe, delete."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import typer
import yaml

from podnet.api import base64data, kinds, lastapplied, manifests, printers
from podnet.api.kinds import Kind
from podnet.cli.common import (
    HomeOption,
    KubeconfigOption,
    ServerOption,
    TokenOption,
    async_command,
    client_for,
    fail,
)
from podnet.client import ApiClient, ApiError

NamespaceOption = typer.Option(None, "--namespace", "-n", help="Namespace (default: default).")


def _manifest_files(path: Path, recursive: bool) -> list[Path]:
    """A file as given; a directory's .yaml, .yml and .json files, those of its subdirectories with -R."""
    if not path.is_dir():
        return [path]
    found = sorted(path.rglob("*") if recursive else path.iterdir())
    return [f for f in found if f.suffix in (".yaml", ".yml", ".json") and f.is_file()]


def _read_manifests(paths: list[str], recursive: bool = False) -> list[tuple[manifests.Manifest, str]]:
    read: list[tuple[manifests.Manifest, str]] = []
    for path in paths:
        if path == "-":
            read.append((manifests.read(sys.stdin.read(), "STDIN"), "STDIN"))
            continue
        for f in _manifest_files(Path(path), recursive):
            try:
                text = f.read_text()
            except OSError as exc:
                raise manifests.ManifestError(f"{f}: {exc.strerror}") from None
            read.append((manifests.read(text, str(f)), str(f)))
    return read


def _load_or_exit(paths: list[str], recursive: bool = False) -> list[tuple[manifests.Manifest, str]]:
    try:
        return _read_manifests(paths, recursive)
    except manifests.ManifestError as exc:
        raise fail(f"error: {exc}") from None


def _objects_or_exit(paths: list[str]) -> list[dict]:
    """The objects of the manifests, for commands that act on all of them or none (delete)."""
    read = _load_or_exit(paths)
    errors = [error for manifest, _ in read for error in manifest.errors]
    if errors:
        raise fail(f"error: {errors[0]}")
    return [obj for manifest, _ in read for obj in manifest.objects]


def _ref(kind: Kind, obj: dict) -> str:
    group = f".{kind.group}" if kind.group else ""
    return f"{kind.singular}{group}/{obj['metadata']['name']}"


async def served_custom_kind(client: ApiClient, obj: dict) -> Kind | None:
    """The kind of `obj` as the server's discovery document serves it (a CustomResourceDefinition's), or
    None when the server does not serve it either."""
    group, _, version = str(obj.get("apiVersion") or "").rpartition("/")
    if not group:
        return None
    try:
        found = await client.request("GET", f"/apis/{group}/{version}")
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise
    for resource in (found or {}).get("resources") or []:
        if resource.get("kind") == obj.get("kind") and "/" not in str(resource.get("name")):
            return Kind(obj["kind"], group, version, resource["name"], bool(resource.get("namespaced")))
    return None


async def apply_object(client: ApiClient, obj: dict, namespace: str | None, kind: Kind | None = None) -> str:
    """kubectl apply's client side: creates the object with the last-applied annotation, or patches the
    live one by a three-way strategic merge of what was applied last, the manifest and the live object
    (fields the server set, such as a clusterIP, stay; fields removed from the manifest go); says
    created, configured or unchanged. The annotation is kubectl's own, so either tool may apply next.
    A custom resource (`kind` from `served_custom_kind`) is patched by a three-way JSON merge patch, as
    kubectl patches it."""
    custom = kind is not None
    kind = kind or kinds.for_object(obj)
    meta = obj.setdefault("metadata", {})
    if kind.namespaced:
        meta["namespace"] = meta.get("namespace") or namespace or "default"
    ns = meta.get("namespace") if kind.namespaced else None
    modified = lastapplied.annotated(obj)
    if not meta.get("name"):
        created = await client.request("POST", kind.path(ns), body=modified)
        return f"{_ref(kind, created)} created"
    try:
        current = await client.get(kind, meta["name"], ns)
    except ApiError as exc:
        if exc.code != 404:
            raise
        await client.request("POST", kind.path(ns), body=modified)
        return f"{_ref(kind, obj)} created"
    original = lastapplied.last_applied(current)
    if custom:
        patch, patch_type = lastapplied.three_way_merge_patch(original, modified, current), "merge"
    else:
        patch, patch_type = lastapplied.three_way_patch(kind, original, modified, current), "strategic"
    if not patch:
        return f"{_ref(kind, obj)} unchanged"
    await client.patch(kind, meta["name"], patch, namespace=ns, patch_type=patch_type)
    return f"{_ref(kind, obj)} configured"


def _print_objects(kind: Kind, objects: list[dict], output: str | None, with_namespace: bool) -> None:
    if output in ("json", "yaml"):
        data = objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects,
                                                      "metadata": {"resourceVersion": ""}}
        typer.echo(json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False),
                   nl=output == "json")
        return
    if output == "name":
        for obj in objects:
            typer.echo(_ref(kind, obj))
        return
    if not objects:
        typer.echo("No resources found.", err=True)
        return
    rows = printers.table_rows(kind.printer, objects, time.time(), wide=output == "wide", with_namespace=with_namespace)
    typer.echo(printers.format_table(rows))


def _describe(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    lines = [f"Name:         {meta.get('name')}"]
    if meta.get("namespace"):
        lines.append(f"Namespace:    {meta['namespace']}")
    for title, field in (("Labels", "labels"), ("Annotations", "annotations")):
        values = meta.get(field) or {}
        text = "\n              ".join(f"{k}={v}" for k, v in sorted(values.items())) or "<none>"
        lines.append(f"{title + ':':<14}{text}")
    lines.append(f"Created:      {meta.get('creationTimestamp', '<unknown>')}")
    for section in ("spec", "status"):
        if obj.get(section):
            lines.append(f"{section.capitalize()}:")
            dumped = yaml.safe_dump(obj[section], sort_keys=False, default_flow_style=False)
            lines += ["  " + line for line in dumped.rstrip().splitlines()]
    for key in ("data", "endpoints", "ports", "subsets", "addressType"):
        if key in obj:
            value = obj[key]
            if key == "data" and obj.get("kind") == "Secret":  # sizes only, as kubectl describe shows them
                value = {k: f"{len(base64data.decode(v))} bytes" for k, v in sorted(value.items())}
            dumped = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
            lines += dumped.rstrip().splitlines()
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    @async_command
    async def apply(
        filename: list[str] = typer.Option(..., "--filename", "-f", help="File, directory or - for stdin."),
        recursive: bool = typer.Option(False, "--recursive", "-R", help="Also the manifests in subdirectories."),
        namespace: str | None = NamespaceOption,
        server: str | None = ServerOption,
        token: str | None = TokenOption,
        kubeconfig: Path | None = KubeconfigOption,
        home: Path | None = HomeOption,
    ) -> None:
        """Create or update objects from YAML or JSON manifests, like kubectl apply: every object that can
        be applied is, and each one that cannot is one error line; the exit code is 1 if any failed."""
        read = _load_or_exit(filename, recursive)
        errors = []
        async with client_for(server, token, kubeconfig) as client:
            for manifest, source in read:
                applying: list[tuple[dict, Kind | None]] = [(obj, None) for obj in manifest.objects]
                served = []
                for obj, line in manifest.unknown:
                    if (custom := await served_custom_kind(client, obj)) is not None:
                        applying.append((obj, custom))
                        served.append(line)
                errors += [f"error: {error}" for error in manifest.errors if error not in served]
                for obj, custom in applying:
                    try:
                        typer.echo(await apply_object(client, obj, namespace, custom))
                    except ApiError as exc:
                        if exc.code in (0, 401):
                            raise  # the server is out of reach or refuses us: nothing else will apply either
                        reason = f" ({exc.reason})" if exc.reason else ""
                        errors.append(f'Error from server{reason}: error when applying "{source}": {exc}')
        if errors:
            raise fail("\n".join(errors))

    @app.command()
    @async_command
    async def get(
        kind: str = typer.Argument(..., help="Kind: pods, svc, nodes, netpol, endpointslices, ..."),
        name: str | None = typer.Argument(None),
        namespace: str | None = NamespaceOption,
        all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
        selector: str | None = typer.Option(None, "--selector", "-l", help="Label selector."),
        field_selector: str | None = typer.Option(None, "--field-selector"),
        output: str | None = typer.Option(None, "--output", "-o", help="wide, json, yaml or name."),
        watch: bool = typer.Option(False, "--watch", "-w", help="After listing, print changes as they happen."),
        server: str | None = ServerOption,
        token: str | None = TokenOption,
        kubeconfig: Path | None = KubeconfigOption,
        home: Path | None = HomeOption,
    ) -> None:
        """List objects as tables, or print them as JSON or YAML."""
        if output not in (None, "wide", "json", "yaml", "name"):
            raise fail(f"error: unable to match a printer suitable for the output format {output!r}")
        k = kinds.lookup(kind)
        ns = None if (all_namespaces or not k.namespaced) else (namespace or "default")
        async with client_for(server, token, kubeconfig) as client:
            if name:
                objects = [await client.get(k, name, ns or (namespace or "default" if k.namespaced else None))]
                rv = objects[0]["metadata"].get("resourceVersion")
            else:
                listed = await client.list(k, ns, label_selector=selector, field_selector=field_selector)
                objects = listed.get("items") or []
                for obj in objects:
                    obj.setdefault("kind", k.kind)
                    obj.setdefault("apiVersion", k.api_version)
                rv = (listed.get("metadata") or {}).get("resourceVersion")
            _print_objects(k, objects, output, all_namespaces and k.namespaced)
            if not watch:
                return
            field = f"metadata.name={name}" if name else field_selector
            async for event in client.watch(k, ns, resource_version=rv, label_selector=selector,
                                            field_selector=field, bookmarks=False):
                obj = event["object"]
                if output in ("json", "yaml", "name"):
                    _print_objects(k, [obj], output, False)
                else:
                    rows = printers.table_rows(k.printer, [obj], time.time(), wide=output == "wide",
                                               with_namespace=all_namespaces and k.namespaced)
                    typer.echo(printers.format_table(rows).splitlines()[-1] + f"   ({event['type']})")

    @app.command()
    @async_command
    async def describe(
        kind: str,
        name: str,
        namespace: str | None = NamespaceOption,
        server: str | None = ServerOption,
        token: str | None = TokenOption,
        kubeconfig: Path | None = KubeconfigOption,
        home: Path | None = HomeOption,
    ) -> None:
        """Show one object in detail."""
        k = kinds.lookup(kind)
        async with client_for(server, token, kubeconfig) as client:
            obj = await client.get(k, name, (namespace or "default") if k.namespaced else None)
        typer.echo(_describe(obj))
        if k.plural == "pods":
            from podnet.cli.cni_cmd import pod_result_lines  # asks the pod's node agent: only for pods

            for line in await pod_result_lines(obj):
                typer.echo(line)

    async def _wait_gone(client: ApiClient, objects: list[tuple[Kind, str, str | None, str]], timeout: float) -> None:
        """Until each object is gone (or replaced by another of the same name), as kubectl delete --wait."""
        deadline = time.monotonic() + timeout
        for k, name, ns, uid in objects:
            while True:
                try:
                    if (await client.get(k, name, ns))["metadata"].get("uid") != uid:
                        break
                except ApiError as exc:
                    if exc.code != 404:
                        raise
                    break
                if time.monotonic() > deadline:
                    raise fail(f'error: timed out waiting for the condition on {k.plural}/{name}')
                await asyncio.sleep(0.2)

    @app.command()
    @async_command
    async def delete(
        kind: str | None = typer.Argument(None),
        names: list[str] | None = typer.Argument(None),
        filename: list[str] | None = typer.Option(None, "--filename", "-f"),
        namespace: str | None = NamespaceOption,
        ignore_not_found: bool = typer.Option(False, "--ignore-not-found"),
        cascade: str = typer.Option("background", "--cascade",
                                    help="background, foreground or orphan: what becomes of the dependents."),
        grace_period: int = typer.Option(-1, "--grace-period",
                                         help="Seconds a pod gets to stop (-1: its own; 0 with --force: at once)."),
        force: bool = typer.Option(False, "--force", help="With --grace-period=0: remove without waiting for the node."),
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Return only once the objects are gone."),
        timeout: float = typer.Option(0.0, "--timeout", help="Seconds to wait (0: a minute per object)."),
        server: str | None = ServerOption,
        token: str | None = TokenOption,
        kubeconfig: Path | None = KubeconfigOption,
        home: Path | None = HomeOption,
    ) -> None:
        """Delete objects by kind and name, or those a manifest names (as kubectl delete)."""
        if cascade not in ("background", "foreground", "orphan"):
            raise fail(f'error: invalid cascade value ({cascade}). Must be "background", "foreground", or "orphan".')
        if grace_period == 0 and not force:
            raise fail("error: --grace-period=0 must have --force specified")
        if force and grace_period < 0:
            grace_period = 0
        targets: list[tuple[Kind, str, str | None]] = []
        if filename:
            for obj in _objects_or_exit(filename):
                k = kinds.for_object(obj)
                ns = (obj["metadata"].get("namespace") or namespace or "default") if k.namespaced else None
                targets.append((k, obj["metadata"]["name"], ns))
        elif kind and names:
            k = kinds.lookup(kind)
            targets = [(k, n, (namespace or "default") if k.namespaced else None) for n in names]
        else:
            raise fail("error: give KIND NAME... or -f FILE")
        if force:
            typer.echo("Warning: Immediate deletion does not wait for confirmation that the running resource has "
                       "been terminated. The resource may continue to run on the cluster indefinitely.", err=True)
        async with client_for(server, token, kubeconfig) as client:
            lingering = []
            for k, name, ns in targets:
                try:
                    answer = await client.delete(k, name, ns, grace_period=None if grace_period < 0 else grace_period,
                                                 propagation_policy=cascade.capitalize())
                except ApiError as exc:
                    if exc.code == 404 and ignore_not_found:
                        continue
                    raise
                typer.echo(f'{k.singular} "{name}" {"force deleted" if force else "deleted"}')
                if answer.get("kind") == k.kind and (answer.get("metadata") or {}).get("deletionTimestamp"):
                    lingering.append((k, name, ns, answer["metadata"].get("uid")))
            if wait and not force:
                await _wait_gone(client, lingering, timeout or 60.0 * max(1, len(lingering)))
