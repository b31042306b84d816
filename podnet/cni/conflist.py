"""Network configuration lists (SPEC.md "Network Configuration Lists") as a runtime reads them, without
I/O: which plugins run, in which order, with which configuration on stdin.

A runtime gives every plugin of the list the list's `name` and `cniVersion`, passes the capability
arguments a plugin declares in `capabilities` (hostPort mappings as `portMappings`, `bandwidth`) under
`runtimeConfig`, and gives each plugin after the first the previous plugin's result as `prevResult`.
DEL runs the list backwards; CHECK and DEL are given the result ADD returned as `prevResult`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from podnet.cni.spec import CniError, Code, decode_object, negotiate

CONFLIST_NAME = "10-podnet.conflist"
_NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class ConfList:
    name: str
    version: str
    plugins: tuple[dict, ...]
    disable_check: bool = False

    @classmethod
    def parse(cls, text: str | bytes) -> ConfList:
        data = decode_object(text, "network configuration list")
        name, version, plugins = data.get("name"), str(data.get("cniVersion") or ""), data.get("plugins")
        if not isinstance(name, str) or not _NETWORK_NAME.match(name):
            raise CniError(Code.INVALID_CONFIG, "invalid network configuration list", f"bad name {name!r}")
        negotiate(version)
        if not isinstance(plugins, list) or not plugins or not all(isinstance(p, dict) and p.get("type") for p in plugins):
            raise CniError(Code.INVALID_CONFIG, "invalid network configuration list",
                           "plugins must be a non-empty list of objects with a type")
        disable = data.get("disableCheck", False)
        return cls(name, version, tuple(plugins), disable is True or str(disable).lower() == "true")

    def plugin_config(self, index: int, capability_args: dict, prev_result: dict | None) -> dict:
        """The stdin of plugin `index`: its own entry with the list's name and version, its runtimeConfig
        (only the capabilities it declares), and prevResult when there is one."""
        plugin = {k: v for k, v in self.plugins[index].items() if k != "capabilities"}
        plugin["name"], plugin["cniVersion"] = self.name, self.version
        declared = self.plugins[index].get("capabilities") or {}
        runtime = {key: value for key, value in capability_args.items() if declared.get(key)}
        if runtime:
            plugin["runtimeConfig"] = runtime
        if prev_result is not None:
            plugin["prevResult"] = prev_result
        return plugin

    def order(self, command: str) -> list[int]:
        """The plugins' indexes in the order `command` runs them."""
        indexes = list(range(len(self.plugins)))
        return indexes[::-1] if command == "DEL" else indexes

    def to_json(self) -> str:
        return json.dumps({"cniVersion": self.version, "name": self.name, "disableCheck": self.disable_check,
                           "plugins": list(self.plugins)}, indent=2) + "\n"


def podnet_conflist(agent_socket: str, chained: tuple[dict, ...] = ()) -> ConfList:
    """The list a node agent writes: podnet-cni, then whatever is chained after it. Its version is 1.0.0,
    the newest the reference plugins of containernetworking-plugins 1.1 speak."""
    return ConfList("podnet", "1.0.0", ({"type": "podnet-cni", "agentSocket": agent_socket}, *chained))
