"""A CNI runtime, as containerd's libcni is one: executes a network configuration list's plugins for a
container, in order for ADD and CHECK and backwards for DEL, each with the same CNI_* environment and its
own configuration on stdin (podnet/cni/conflist.py), and keeps the result of ADD, with the capability
arguments it was given, for CHECK and DEL (libcni keeps them under /var/lib/cni/results): `portmap` finds
the rules to remove by the portMappings its DEL is given. A failing plugin stops the list; a failed ADD is
undone by DEL of the whole list, backwards, as the spec asks. `log` appends every plugin call, with its
environment, stdin and stdout, as one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from podnet.cni.conflist import ConfList
from podnet.cni.spec import CniError, Code

# Where a runtime finds plugins: podnet-cni beside this interpreter, then the reference plugins.
CNI_PATH = (str(Path(sys.executable).parent), "/usr/lib/cni", "/opt/cni/bin")


@dataclass(frozen=True, slots=True)
class Container:
    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()  # CNI_ARGS, e.g. K8S_POD_NAMESPACE and K8S_POD_NAME

    def environment(self, command: str, cni_path: tuple[str, ...]) -> dict[str, str]:
        # IgnoreUnknown first, as containerd passes it: the reference plugins refuse args they do not know.
        args = (("IgnoreUnknown", "1"), *self.args) if self.args else ()
        return {"CNI_COMMAND": command, "CNI_CONTAINERID": self.container_id, "CNI_NETNS": self.netns,
                "CNI_IFNAME": self.ifname, "CNI_ARGS": ";".join(f"{k}={v}" for k, v in args),
                "CNI_PATH": ":".join(cni_path), "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}


class Runtime:
    def __init__(self, conflist: ConfList, cni_path: tuple[str, ...], cache_dir: Path, log: Path | None = None):
        self.conflist = conflist
        self.cni_path = cni_path
        self.cache_dir = cache_dir
        self.log = log

    def _cache(self, container: Container) -> Path:
        return self.cache_dir / f"{self.conflist.name}-{container.container_id}-{container.ifname}.json"

    def _cached(self, container: Container) -> dict:
        try:
            cached = json.loads(self._cache(container).read_text())
        except (OSError, ValueError):
            return {}
        return cached if isinstance(cached, dict) else {}

    def cached_result(self, container: Container) -> dict | None:
        return self._cached(container).get("result")

    async def add(self, container: Container, capability_args: dict | None = None,
                  prev_result: dict | None = None) -> dict:
        """ADD of the whole list; `prev_result` is the first plugin's prevResult, for a runtime that did
        what comes before this list itself."""
        result = prev_result
        try:
            for index in self.conflist.order("ADD"):
                result = await self._exec(index, "ADD", container, capability_args or {}, result)
        except CniError:
            with contextlib.suppress(CniError):
                await self.delete(container, capability_args)
            raise
        if result is None:
            raise CniError(Code.INVALID_CONFIG, "the list's last plugin returned no result")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache(container).write_text(json.dumps({
            "kind": "cniCacheV1", "containerId": container.container_id, "ifName": container.ifname,
            "netns": container.netns, "cniArgs": [list(arg) for arg in container.args],
            "networkName": self.conflist.name, "capabilityArgs": capability_args or {}, "result": result}))
        return result

    async def check(self, container: Container, capability_args: dict | None = None) -> None:
        """CHECK of the whole list; `capability_args` None: those ADD was given."""
        if self.conflist.disable_check:
            return
        cached = self._cached(container)
        if cached.get("result") is None:
            raise CniError(Code.UNKNOWN_CONTAINER, "no result of ADD is kept for this container")
        args = cached.get("capabilityArgs") or {} if capability_args is None else capability_args
        for index in self.conflist.order("CHECK"):
            await self._exec(index, "CHECK", container, args, cached["result"])

    async def delete(self, container: Container, capability_args: dict | None = None) -> None:
        """DEL of the whole list, backwards; `capability_args` None: those ADD was given."""
        cached = self._cached(container)
        args = cached.get("capabilityArgs") or {} if capability_args is None else capability_args
        for index in self.conflist.order("DEL"):
            await self._exec(index, "DEL", container, args, cached.get("result"))
        self._cache(container).unlink(missing_ok=True)

    def cached_containers(self) -> list[Container]:
        """The containers whose ADD result this runtime keeps."""
        containers = []
        for path in sorted(self.cache_dir.glob(f"{self.conflist.name}-*.json")):
            try:
                cached = json.loads(path.read_text())
                containers.append(Container(cached["containerId"], cached.get("netns") or "", cached["ifName"],
                                            tuple((str(k), str(v)) for k, v in cached.get("cniArgs") or ())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return containers

    def find(self, plugin_type: str) -> str:
        for directory in self.cni_path:
            path = Path(directory) / plugin_type
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        raise CniError(Code.INVALID_CONFIG, f"failed to find plugin {plugin_type!r}", f"in path {list(self.cni_path)}")

    async def _exec(self, index: int, command: str, container: Container, capability_args: dict,
                    prev_result: dict | None) -> dict | None:
        plugin_type = self.conflist.plugins[index]["type"]
        config = self.conflist.plugin_config(index, capability_args, prev_result)
        env = container.environment(command, self.cni_path)
        process = await asyncio.create_subprocess_exec(
            self.find(plugin_type), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        stdout, stderr = await process.communicate(json.dumps(config).encode())
        try:
            output = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            output = None
            if not process.returncode:
                raise CniError(Code.DECODE_FAILURE, f"{plugin_type} printed no JSON", stdout.decode(errors="replace")) from None
        self._log(plugin_type, env, config, output, process.returncode, stderr)
        if process.returncode:
            if isinstance(output, dict) and "code" in output:
                raise CniError(int(output["code"]), f"{plugin_type}: {output.get('msg', '')}", output.get("details", ""))
            raise CniError(Code.IO_FAILURE, f"{plugin_type} failed with status {process.returncode}",
                           stderr.decode(errors="replace").strip())
        # A plugin that prints nothing on ADD passes the previous result on unchanged.
        return output if command == "ADD" and output is not None else prev_result

    def _log(self, plugin_type: str, env: dict, config: dict, output: object, status: int, stderr: bytes) -> None:
        if self.log is None:
            return
        entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                 "plugin": plugin_type, "env": {k: v for k, v in env.items() if k.startswith("CNI_")},
                 "stdin": config, "stdout": output, "exit": status}
        if stderr.strip():
            entry["stderr"] = stderr.decode(errors="replace").strip()
        with open(self.log, "a") as file:
            file.write(json.dumps(entry) + "\n")


def undo_chained(conflist_path: Path, cache_dir: Path) -> list[str]:
    """After a crash, for `podnet clean`: DEL, by every plugin of the list after the first, of each
    container whose ADD result is cached, so that what they put on the host (portmap's rules, bandwidth's
    ifb) goes. The first plugin's part needs the agent that is gone; its interface goes with the
    namespace. Returns the containers undone."""
    try:
        conflist = ConfList.parse(conflist_path.read_bytes())
    except (OSError, CniError):
        return []
    chained = Runtime(replace(conflist, plugins=conflist.plugins[1:]), CNI_PATH, cache_dir)
    if not chained.conflist.plugins:
        return []

    async def undo() -> list[str]:
        undone = []
        for container in chained.cached_containers():
            with contextlib.suppress(CniError, OSError):
                await chained.delete(container)
                undone.append(container.container_id)
        return undone

    return asyncio.run(undo())
