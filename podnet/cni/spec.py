"""The CNI protocol (SPEC.md 1.1), without I/O: what a plugin reads from its environment and stdin, and
the JSON it prints.

A runtime runs a plugin binary with `CNI_*` variables and the network configuration on stdin; the plugin
prints a result (ADD), nothing (DEL, CHECK, GC, STATUS) or, failing, an error object with one of the
spec's well-known codes and exits 1. `parse_request` turns environment and stdin into a `Request` or
raises `CniError` with the code the spec names for what is wrong; `Attachment.result(version)` and
`CniError.to_json(version)` write what the plugin prints, in the negotiated version's shape (0.4.0 still
carries `"version": "4"` on each IP, 1.0.0 dropped it). `check_attachment` compares a `prevResult` with
what is really in the namespace, for CHECK.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
VALID_ATTACHMENTS = "cni.dev/valid-attachments"


class Code(IntEnum):
    """The spec's well-known error codes (0-99 are reserved to it; 100+ are a plugin's own)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    # podnet's own
    ADDRESSES_EXHAUSTED = 100
    CHECK_FAILED = 101
    AGENT_FAILURE = 102


class Command(StrEnum):
    ADD = "ADD"
    DEL = "DEL"
    CHECK = "CHECK"
    VERSION = "VERSION"
    STATUS = "STATUS"
    GC = "GC"


# The variables each command cannot do without (SPEC.md "Parameters"): DEL may be called after the
# namespace is gone, so CNI_NETNS is optional there; VERSION, STATUS and GC concern no container.
_REQUIRED = {
    Command.ADD: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    Command.CHECK: ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    Command.DEL: ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    Command.VERSION: (),
    Command.STATUS: (),
    Command.GC: (),
}


class CniError(Exception):
    """A failure as the spec reports it: a code, a short message and optional details."""

    def __init__(self, code: Code | int, msg: str, details: str = ""):
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_data(self, version: str = LATEST_VERSION) -> dict:
        data: dict = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            data["details"] = self.details
        return data

    def to_json(self, version: str = LATEST_VERSION) -> str:
        return json.dumps(self.to_data(version))


@dataclass(frozen=True, slots=True)
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class ValidAttachment:
    container_id: str
    ifname: str


@dataclass(frozen=True, slots=True)
class Request:
    """One invocation: its command, the variables it was given and its network configuration."""

    command: Command
    version: str  # the configuration's cniVersion, which the plugin's output must carry
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: tuple[str, ...] = ()
    args: dict[str, str] = field(default_factory=dict)  # CNI_ARGS
    config: dict = field(default_factory=dict)

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def network(self) -> str:
        return str(self.config.get("name") or "")

    @property
    def prev_result(self) -> dict | None:
        return self.config.get("prevResult")

    def port_mappings(self) -> list[PortMapping]:
        entries = (self.config.get("runtimeConfig") or {}).get("portMappings") or []
        try:
            return [PortMapping(int(e["hostPort"]), int(e["containerPort"]), str(e.get("protocol") or "tcp").lower(),
                                str(e.get("hostIP") or "")) for e in entries]
        except (KeyError, TypeError, ValueError) as exc:
            raise CniError(Code.INVALID_CONFIG, "invalid runtimeConfig.portMappings", str(exc)) from None

    def bandwidth(self) -> dict:
        """runtimeConfig.bandwidth as the runtime passed it (ingressRate, egressRate in bit/s, bursts)."""
        value = (self.config.get("runtimeConfig") or {}).get("bandwidth") or {}
        if not isinstance(value, dict):
            raise CniError(Code.INVALID_CONFIG, "invalid runtimeConfig.bandwidth", repr(value))
        return value

    def valid_attachments(self) -> list[ValidAttachment]:
        """GC's list of the attachments the runtime still wants; everything else of this network goes."""
        entries = self.config.get(VALID_ATTACHMENTS)
        if entries is None:
            return []
        try:
            return [ValidAttachment(str(e["containerID"]), str(e["ifname"])) for e in entries]
        except (KeyError, TypeError) as exc:
            raise CniError(Code.INVALID_CONFIG, f"invalid {VALID_ATTACHMENTS}", f"missing {exc}") from None


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        raise CniError(Code.DECODE_FAILURE, "failed to decode version", repr(version)) from None
    if len(parts) != 3:
        raise CniError(Code.DECODE_FAILURE, "failed to decode version", repr(version))
    return parts


def negotiate(version: str) -> str:
    """The configuration's cniVersion when this plugin speaks it; else error 1, naming what it speaks."""
    version_tuple(version)
    if version not in SUPPORTED_VERSIONS:
        raise CniError(Code.INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}")
    return version


def parse_args(text: str) -> dict[str, str]:
    """CNI_ARGS: `KEY=VALUE` pairs separated by semicolons."""
    args = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(Code.INVALID_ENVIRONMENT, "invalid CNI_ARGS", f"{pair!r} is not KEY=VALUE")
        args[key] = value
    return args


def decode_object(data: str | bytes, what: str = "network configuration") -> dict:
    """A JSON object, or error 6 (failed to decode content) naming `what` could not be decoded."""
    try:
        decoded = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(Code.DECODE_FAILURE, f"failed to decode {what}", str(exc)) from None
    if not isinstance(decoded, dict):
        raise CniError(Code.DECODE_FAILURE, f"failed to decode {what}", "not a JSON object")
    return decoded


def parse_request(environ: dict[str, str], stdin: bytes) -> Request:
    """Environment and stdin of one invocation, checked as the spec requires, in the order a runtime
    needs the answers: the command, then the configuration's version, then the other variables."""
    name = environ.get("CNI_COMMAND", "")
    try:
        command = Command(name)
    except ValueError:
        raise CniError(Code.INVALID_ENVIRONMENT, "invalid CNI_COMMAND",
                       f"{name!r} is not one of {[c.value for c in Command]}") from None
    config = decode_object(stdin) if stdin.strip() or command is not Command.VERSION else {}
    version = str(config.get("cniVersion") or "")
    if command is Command.VERSION:
        return Request(command, version or LATEST_VERSION, config=config)
    if not version:
        raise CniError(Code.INVALID_CONFIG, "invalid network configuration", "cniVersion is missing")
    negotiate(version)
    if command is not Command.GC and not config.get("name"):
        raise CniError(Code.INVALID_CONFIG, "invalid network configuration", "name is missing")
    missing = [var for var in _REQUIRED[command] if not environ.get(var)]
    if missing:
        raise CniError(Code.INVALID_ENVIRONMENT, "required environment variables missing", ", ".join(missing))
    if command is Command.CHECK and version_tuple(version) >= (0, 4, 0) and not isinstance(config.get("prevResult"), dict):
        raise CniError(Code.INVALID_CONFIG, "invalid network configuration", "CHECK needs prevResult")
    return Request(
        command,
        version,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        path=tuple(filter(None, environ.get("CNI_PATH", "").split(":"))),
        args=parse_args(environ.get("CNI_ARGS", "")),
        config=config,
    )


def version_result() -> dict:
    """VERSION's answer; its cniVersion is the latest the plugin speaks, whatever the caller's."""
    return {"cniVersion": LATEST_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


@dataclass(frozen=True, slots=True)
class Attachment:
    """What ADD made: one interface in a sandbox with one address and a default route, and the host end
    of its veth pair, which a result lists first (as `ptp` does) for the plugins chained after it:
    `bandwidth` shapes that interface."""

    ifname: str
    mac: str
    sandbox: str
    address: str  # "10.244.1.5/24"
    gateway: str
    mtu: int = 1450
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    host_ifname: str = ""
    host_mac: str = ""
    links: tuple[str, ...] = ()  # destinations on the link, routed without a gateway ("169.254.1.1/32")

    def result(self, version: str) -> dict:
        interfaces: list[dict] = [{"name": self.host_ifname, "mac": self.host_mac}] if self.host_ifname else []
        interface: dict = {"name": self.ifname, "mac": self.mac, "sandbox": self.sandbox}
        ip: dict = {"address": self.address, "gateway": self.gateway, "interface": len(interfaces)}
        interfaces.append(interface)
        if version_tuple(version) < (1, 0, 0):
            ip = {"version": "4", **ip}
        else:
            for entry in interfaces:
                entry["mtu"] = self.mtu
        result = {"cniVersion": version, "interfaces": interfaces, "ips": [ip],
                  "routes": [*({"dst": dst} for dst in self.links), {"dst": "0.0.0.0/0", "gw": self.gateway}]}
        if self.nameservers:
            result["dns"] = {"nameservers": list(self.nameservers), "search": list(self.search),
                             "options": list(self.options)}
        return result

    @classmethod
    def from_data(cls, data: dict) -> Attachment:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_data(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in
                ((name, getattr(self, name)) for name in self.__slots__)}


def check_attachment(prev_result: dict, ifname: str, links: list[dict], addresses: list[dict],
                     routes: list[dict]) -> list[str]:
    """What of `prev_result` is not in the namespace, for CHECK. `links`, `addresses` and `routes` are
    what `ip -json link`, `ip -json addr` and `ip -json route` print inside it."""
    problems = []
    interfaces = prev_result.get("interfaces") or []
    mine = [i for i, iface in enumerate(interfaces) if iface.get("name") == ifname and iface.get("sandbox")]
    if not mine:
        return [f"prevResult has no interface {ifname} in a sandbox"]
    link = next((entry for entry in links if entry.get("ifname") == ifname), None)
    if link is None:
        return [f"interface {ifname} is not in the namespace"]
    expected_mac = (interfaces[mine[0]].get("mac") or "").lower()
    if expected_mac and (link.get("address") or "").lower() != expected_mac:
        problems.append(f"interface {ifname} has MAC {link.get('address')}, not {expected_mac}")
    if "UP" not in (link.get("flags") or []):
        problems.append(f"interface {ifname} is down")
    present = {f"{a.get('local')}/{a.get('prefixlen')}" for entry in addresses if entry.get("ifname") == ifname
               for a in entry.get("addr_info") or [] if a.get("family") == "inet"}
    for ip in prev_result.get("ips") or []:
        if ip.get("interface") in mine and ip.get("address") not in present:
            problems.append(f"address {ip.get('address')} is not on {ifname}")
    for route in prev_result.get("routes") or []:
        if not any(_route_matches(route, entry) for entry in routes):
            problems.append(f"route to {route.get('dst')}" + (f" via {route['gw']}" if route.get("gw") else "")
                            + " is missing")
    return problems


def _route_matches(wanted: dict, entry: dict) -> bool:
    dst = entry.get("dst")
    try:
        present = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)
        if present != ipaddress.ip_network(wanted.get("dst", ""), strict=False):
            return False
    except (TypeError, ValueError):
        return False
    return not wanted.get("gw") or entry.get("gateway") == wanted["gw"]
