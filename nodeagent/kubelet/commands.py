"""What `exec` runs in a virtual pod: the commands its network stack can carry out, parsed from an argv and
their results rendered as a program's stdout, stderr and exit code. Pure.

A virtual pod has no programs, only a network identity, so `exec` understands:
- the agnhost commands that Kubernetes' e2e suites run in their probe pods: `/agnhost connect HOST:PORT
  [--timeout=DURATION] [--protocol=tcp|udp] [--udp-data=TEXT]`, which exits 0 when the connection opens
  (UDP: an answer comes) and otherwise 1 with agnhost's one-line reason on stderr (`TIMEOUT`, `REFUSED`,
  `DNS: ...`, `OTHER: ...`, `UNKNOWN: ...`), and `/agnhost dns-server-list`, `/agnhost dns-suffix`;
- podnet's own `http URL`, `connect HOST:PORT [--udp] [--timeout S]` and `ping IP [--count N]`;
- `curl URL` with the options probes use (`-sSfi`, `-m`, `--connect-timeout`, `-o /dev/null`,
  `-w '%{http_code}'`), answering and exiting as curl does; busybox's `wget -qO- URL` and `--spider`;
- `hostname` and `cat /etc/hostname`, `cat /etc/resolv.conf`, `cat /etc/hosts`.
Anything else fails as a shell reports a missing program: exit 127 and a line on stderr.

Each command names the node agent RPC that carries it out (`pod.connect`, `pod.http`, `pod.ping`) and
turns that RPC's result into an `Outcome`; `podnet exec` runs the same commands over the same RPCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from podnet.api.clusterdns import resolv_conf
from podnet.api.durations import parse_duration
from podnet.rpc.agentmethods import AgentMethod

USAGE = "usage: http URL | connect HOST:PORT [--udp] [--timeout S] | ping IP [--count N]"
NOT_FOUND = 127
# agnhost connect's --timeout 0 means no timeout of its own (the kernel's, about two minutes); we stop at this.
NO_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class Outcome:
    stdout: bytes = b""
    stderr: bytes = b""
    code: int = 0


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What a virtual pod's files would say of it."""

    name: str
    namespace: str
    hostname: str
    ip: str


def fail(message: str, code: int = 1) -> Outcome:
    return Outcome(stderr=(message.rstrip("\n") + "\n").encode(), code=code)


def _flags(args: list[str], known: dict[str, bool]) -> tuple[dict[str, str], list[str]]:
    """cobra-style flags: `--name=value`, `--name value`, and `--name` alone for the boolean ones
    (`known`: flag name -> takes a value). ValueError names an unknown flag or a missing value."""
    flags: dict[str, str] = {}
    positional: list[str] = []
    rest = list(args)
    while rest:
        item = rest.pop(0)
        if not item.startswith("--") or item == "--":
            positional.append(item)
            continue
        name, has_value, value = item[2:].partition("=")
        if name not in known:
            raise ValueError(f"unknown flag: --{name}")
        if known[name] and not has_value:
            if not rest:
                raise ValueError(f"flag needs an argument: --{name}")
            value = rest.pop(0)
        flags[name] = value if known[name] else "true"
    return flags, positional


# ---- the commands ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgnhostConnect:
    host: str
    port: int
    protocol: str  # "TCP" or "UDP"
    timeout: float
    udp_data: str = "hostname"

    def rpc(self) -> tuple[str, dict]:
        params = {"host": self.host, "port": self.port, "protocol": self.protocol, "timeout": self.timeout}
        if self.protocol == "UDP":
            params["payload"] = f"{self.udp_data}\n".encode()
        return AgentMethod.POD_CONNECT, params

    def render(self, result: dict) -> Outcome:
        if result.get("ok"):
            return Outcome()
        reason = str(result.get("reason") or "")
        target = f"{self.host}:{self.port}"
        if reason.startswith("could not resolve host"):
            return fail(f"DNS: lookup {self.host}: no such host")
        if self.protocol == "UDP":
            if "timed out" in reason:
                return fail(f"TIMEOUT: read udp {target}: i/o timeout")
            if "refused" in reason:
                return fail(f"REFUSED: read udp {target}: connection refused")
            return fail(f"UNKNOWN: {reason}")
        if "timed out" in reason:
            return fail("TIMEOUT")
        if "refused" in reason:
            return fail("REFUSED")
        return fail(f"OTHER: dial tcp {target}: {reason}")


@dataclass(frozen=True, slots=True)
class Http:
    url: str
    timeout: float = 10.0

    def rpc(self) -> tuple[str, dict]:
        return AgentMethod.POD_HTTP, {"url": self.url, "timeout": self.timeout}

    def render(self, result: dict) -> Outcome:
        if "status" not in result:
            return fail(f"error: {self.url}: {result.get('reason')}")
        body = result.get("body") or b""
        body = body if isinstance(body, bytes) else str(body).encode()
        if body and not body.endswith(b"\n"):
            body += b"\n"
        if not result.get("ok"):
            return Outcome(body, f"error: HTTP {result['status']} {result['reason']}\n".encode(), 1)
        return Outcome(body)


@dataclass(frozen=True, slots=True)
class Curl:
    """`curl [-sSfi] [-m S] [--connect-timeout S] [-o /dev/null] [-w FORMAT] URL`: one GET, reported as curl
    reports it (its exit codes: 6 name not resolved, 7 refused, 28 timed out, 22 an HTTP error with -f)."""

    url: str
    timeout: float = NO_TIMEOUT
    silent: bool = False
    show_error: bool = False
    fail_on_error: bool = False
    include: bool = False
    discard: bool = False  # -o /dev/null
    write_out: str = ""  # -w: %{http_code} is the one variable understood

    def rpc(self) -> tuple[str, dict]:
        return AgentMethod.POD_HTTP, {"url": self.url, "timeout": self.timeout}

    def _error(self, code: int, text: str) -> Outcome:
        quiet = self.silent and not self.show_error
        return Outcome(self._written(0), b"" if quiet else f"curl: ({code}) {text}\n".encode(), code)

    def _written(self, status: int) -> bytes:
        return self.write_out.replace("%{http_code}", f"{status:03d}").replace("\\n", "\n").encode()

    def render(self, result: dict) -> Outcome:
        parts = urlsplit(self.url if "://" in self.url else f"http://{self.url}")
        host, port = parts.hostname or "", parts.port or 80
        if "status" not in result:
            reason = str(result.get("reason") or "")
            if reason.startswith("could not resolve host"):
                return self._error(6, f"Could not resolve host: {host}")
            if "refused" in reason:
                return self._error(7, f"Failed to connect to {host} port {port}: Connection refused")
            if "timed out" in reason:
                return self._error(28, f"Connection timed out after {int(self.timeout * 1000)} milliseconds")
            return self._error(56, f"Recv failure: {reason}")
        status = int(result["status"])
        if self.fail_on_error and status >= 400:
            return self._error(22, f"The requested URL returned error: {status}")
        body = result.get("body") or b""
        body = body if isinstance(body, bytes) else str(body).encode()
        if self.include:
            head = f"HTTP/1.1 {status} {result.get('reason', '')}\r\n" + "".join(
                f"{name}: {value}\r\n" for name, value in result.get("headers") or [])
            body = head.encode() + b"\r\n" + body
        return Outcome((b"" if self.discard else body) + self._written(status))


@dataclass(frozen=True, slots=True)
class Wget:
    """busybox's `wget [-q] [-O -] [-T S | --timeout=S] [--spider] URL`, as Kubernetes' NetworkPolicy
    walkthrough runs it: the body to stdout (`-O -`), or only whether it is there (`--spider`); exit 1 and
    busybox's line on stderr when it is not."""

    url: str
    timeout: float = NO_TIMEOUT
    quiet: bool = False
    spider: bool = False

    def rpc(self) -> tuple[str, dict]:
        return AgentMethod.POD_HTTP, {"url": self.url, "timeout": self.timeout}

    def render(self, result: dict) -> Outcome:
        parts = urlsplit(self.url if "://" in self.url else f"http://{self.url}")
        host, port = parts.hostname or "", parts.port or 80
        progress = b"" if self.quiet else f"Connecting to {host}:{port}\n".encode()
        if "status" not in result:
            reason = str(result.get("reason") or "")
            if reason.startswith("could not resolve host"):
                return Outcome(stderr=f"wget: bad address '{host}:{port}'\n".encode(), code=1)
            if "timed out" in reason:
                return Outcome(stderr=progress + b"wget: download timed out\n", code=1)
            return Outcome(stderr=progress + f"wget: can't connect to remote host: {reason.capitalize()}\n".encode(), code=1)
        status = int(result["status"])
        if status >= 400:
            return Outcome(stderr=progress + f"wget: server returned error: HTTP/1.1 {status} {result.get('reason', '')}\n".encode(), code=1)
        if self.spider:
            return Outcome(stderr=progress + (b"" if self.quiet else b"remote file exists\n"))
        body = result.get("body") or b""
        return Outcome(body if isinstance(body, bytes) else str(body).encode(),
                       progress + (b"" if self.quiet else b"writing to stdout\n"))


@dataclass(frozen=True, slots=True)
class Connect:
    host: str
    port: int
    protocol: str
    timeout: float = 5.0

    def rpc(self) -> tuple[str, dict]:
        return AgentMethod.POD_CONNECT, {"host": self.host, "port": self.port, "protocol": self.protocol,
                                         "timeout": self.timeout}

    def render(self, result: dict) -> Outcome:
        if not result.get("ok"):
            return fail(f"error: {self.protocol} {self.host}:{self.port}: {result.get('reason')}")
        if self.protocol == "UDP":
            reply = result.get("reply") or b""
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            return Outcome(f"answered by {result.get('peer')}: {text}\n".encode())
        return Outcome(f"connected to {result.get('remote')} from {result.get('local')}\n".encode())


@dataclass(frozen=True, slots=True)
class Ping:
    ip: str
    count: int = 3
    timeout: float | None = None

    def rpc(self) -> tuple[str, dict]:
        return AgentMethod.POD_PING, {"ip": self.ip, "count": self.count, "timeout": self.timeout}

    def render(self, result: dict) -> Outcome:
        transmitted, received = result["transmitted"], result["received"]
        loss = 100 * (transmitted - received) // max(transmitted, 1)
        lines = [f"reply from {self.ip}: icmp_seq={i + 1} time={rtt * 1000:.3f} ms" for i, rtt in enumerate(result["rtts"])]
        lines += [f"--- {self.ip} ping statistics ---",
                  f"{transmitted} packets transmitted, {received} received, {loss}% packet loss"]
        if result["rtts"]:
            rtts = [r * 1000 for r in result["rtts"]]
            lines.append(f"rtt min/avg/max = {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms")
        stdout = ("\n".join(lines) + "\n").encode()
        if not result.get("ok"):
            return Outcome(stdout, f"error: {result.get('reason') or 'no reply'}\n".encode(), 1)
        return Outcome(stdout)


@dataclass(frozen=True, slots=True)
class Local:
    """A command answered from what the pod is, without the network: `hostname`, `cat FILE`, agnhost's
    DNS commands."""

    what: str  # "hostname", "/etc/hostname", "/etc/resolv.conf", "/etc/hosts", "dns-server-list", "dns-suffix"

    def answer(self, pod: PodFacts) -> Outcome:
        conf = resolv_conf(pod.namespace)
        if self.what in ("hostname", "/etc/hostname"):
            return Outcome(f"{pod.hostname}\n".encode())
        if self.what == "/etc/resolv.conf":
            return Outcome(conf.encode())
        if self.what == "/etc/hosts":
            return Outcome(("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                            f"{pod.ip}\t{pod.hostname}\n").encode())
        words = [line.split()[1:] for line in conf.splitlines() if line.split()[:1] in (["nameserver"], ["search"])]
        if self.what == "dns-server-list":
            return Outcome((",".join(w for line in words[:1] for w in line) + "\n").encode())
        return Outcome((",".join(words[1]) + "\n").encode())


Command = AgnhostConnect | Http | Curl | Wget | Connect | Ping | Local
_FILES = ("/etc/hostname", "/etc/resolv.conf", "/etc/hosts")


def parse(argv: list[str]) -> Command | Outcome:
    """The command `argv` asks for, or the Outcome of a command line that cannot run."""
    if not argv:
        return fail("error: no command given", 1)
    program, args = argv[0], argv[1:]
    if program in ("/agnhost", "agnhost"):
        return _parse_agnhost(args)
    if program in ("hostname", "/bin/hostname") and not args:
        return Local("hostname")
    if program in ("cat", "/bin/cat"):
        if len(args) == 1 and args[0] in _FILES:
            return Local(args[0])
        missing = next((a for a in args if a not in _FILES), "")
        return fail(f"cat: {missing}: No such file or directory" if missing else "error: cat needs a file")
    if program in ("curl", "/usr/bin/curl"):
        return _parse_curl(args)
    if program in ("wget", "/bin/wget"):
        return _parse_wget(args)
    if program in ("http", "connect", "ping"):
        try:
            return parse_podnet(program, args)
        except ValueError as exc:
            return fail(f"error: {exc}\n{USAGE}")
    return fail(f'exec: "{program}": executable file not found in $PATH', NOT_FOUND)


def parse_podnet(verb: str, args: list[str]) -> Http | Connect | Ping:
    """podnet's own commands; ValueError with a one-line reason."""
    flags, positional = _flags(args, {"udp": False, "timeout": True, "count": True})
    if len(positional) != 1:
        raise ValueError(f"{verb} takes one target")
    try:
        timeout = float(flags["timeout"]) if "timeout" in flags else None
        count = int(flags.get("count", "3"))
    except ValueError:
        raise ValueError("--timeout and --count take numbers") from None
    target = positional[0]
    if verb == "http":
        return Http(target, timeout or 10.0)
    if verb == "connect":
        host, _, port = target.rpartition(":")
        if not host or not (port.isascii() and port.isdigit()):
            raise ValueError(f"connect needs HOST:PORT, not {target!r}")
        return Connect(host, int(port), "UDP" if "udp" in flags else "TCP", timeout or 5.0)
    if verb == "ping":
        return Ping(target, count, timeout)
    raise ValueError(f"unknown exec command {verb!r}")


def _parse_agnhost(args: list[str]) -> Command | Outcome:
    if not args:
        return fail("error: agnhost needs a command (connect, dns-server-list, dns-suffix)")
    sub, rest = args[0], args[1:]
    if sub in ("dns-server-list", "dns-suffix"):
        return Local(sub) if not rest else fail(f'Error: unknown command "{rest[0]}" for "agnhost {sub}"')
    if sub != "connect":
        return fail(f'Error: unknown command "{sub}" for "agnhost"\nRun \'agnhost --help\' for usage.')
    try:
        flags, positional = _flags(rest, {"timeout": True, "protocol": True, "udp-data": True, "sctp-data": True})
        timeout = parse_duration(flags.get("timeout", "0"))
    except ValueError as exc:
        return fail(f"Error: {exc}")
    if len(positional) != 1:
        return fail(f"Error: accepts 1 arg(s), received {len(positional)}")
    protocol = flags.get("protocol", "tcp")
    if protocol not in ("", "tcp", "udp"):
        # agnhost's own wording: the protocol is printed after the message
        return fail(f"Unsupported protocol\n{protocol}")
    host, _, port = positional[0].rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return fail(f"UNKNOWN: address {positional[0]}: missing port in address" if not host
                    else f'UNKNOWN: address {positional[0]}: invalid port "{port}"')
    return AgnhostConnect(host.strip("[]"), int(port), "UDP" if protocol == "udp" else "TCP",
                          timeout or NO_TIMEOUT, flags.get("udp-data", "hostname"))


_CURL_FLAGS = {"s": "silent", "S": "show_error", "f": "fail_on_error", "i": "include"}
_CURL_LONG_FLAGS = {"silent": "silent", "show-error": "show_error", "fail": "fail_on_error", "include": "include"}
_CURL_VALUES = {"m": "max-time", "o": "output", "w": "write-out"}
_CURL_HELP = "curl: try 'curl --help' or 'curl --manual' for more information"


def _parse_curl(args: list[str]) -> Curl | Outcome:
    flags: dict[str, bool] = {}
    values: dict[str, str] = {}
    urls: list[str] = []
    rest = list(args)
    while rest:
        item = rest.pop(0)
        if item.startswith("--"):
            name, has_value, value = item[2:].partition("=")
            if name in _CURL_LONG_FLAGS:
                flags[_CURL_LONG_FLAGS[name]] = True
                continue
            if name not in ("max-time", "connect-timeout", "output", "write-out"):
                return fail(f"curl: option {item}: is unknown\n{_CURL_HELP}", 2)
            if not has_value:
                if not rest:
                    return fail(f"curl: option {item}: requires parameter\n{_CURL_HELP}", 2)
                value = rest.pop(0)
            values[name] = value
        elif item.startswith("-") and len(item) > 1:
            letters = item[1:]
            for index, letter in enumerate(letters):
                if letter in _CURL_FLAGS:
                    flags[_CURL_FLAGS[letter]] = True
                elif letter in _CURL_VALUES:
                    value = letters[index + 1:]
                    if not value:
                        if not rest:
                            return fail(f"curl: option -{letter}: requires parameter\n{_CURL_HELP}", 2)
                        value = rest.pop(0)
                    values[_CURL_VALUES[letter]] = value
                    break
                else:
                    return fail(f"curl: option -{letter}: is unknown\n{_CURL_HELP}", 2)
        else:
            urls.append(item)
    if len(urls) != 1:
        return fail(f"curl: no URL specified!\n{_CURL_HELP}" if not urls else "error: one URL at a time", 2)
    if values.get("output", "/dev/null") != "/dev/null":
        return fail(f"curl: (23) Failure writing output to destination: {values['output']} is not writable", 23)
    try:
        limits = [float(values[key]) for key in ("max-time", "connect-timeout") if key in values]
    except ValueError:
        return fail(f"curl: option --max-time: expected a proper numerical parameter\n{_CURL_HELP}", 2)
    return Curl(urls[0], min(limits) if limits else NO_TIMEOUT, discard="output" in values,
                write_out=values.get("write-out", ""), **flags)


def _parse_wget(args: list[str]) -> Wget | Outcome:
    usage = "BusyBox wget: usage: wget [-q] [-O -] [-T SEC] [--spider] URL"
    quiet = spider = False
    to_stdout = False
    timeout = NO_TIMEOUT
    urls: list[str] = []
    rest = list(args)
    while rest:
        item = rest.pop(0)
        name, has_value, value = item.partition("=")
        try:
            if item in ("-q", "--quiet"):
                quiet = True
            elif item == "--spider":
                spider = True
            elif name == "--output-document" or item.startswith(("-O", "-qO")):
                quiet = quiet or item.startswith("-qO")
                target = value if name == "--output-document" else item.partition("O")[2]
                if not target and not has_value:
                    target = rest.pop(0)
                if target != "-":
                    return fail(f"wget: can't open '{target}': Read-only file system")
                to_stdout = True
            elif item in ("-T", "--timeout") or name == "--timeout":
                timeout = float(value if has_value else rest.pop(0))
            elif item.startswith("-T") and len(item) > 2:
                timeout = float(item[2:])
            elif item.startswith("-"):
                return fail(f"wget: unrecognized option '{item}'\n{usage}")
            else:
                urls.append(item)
        except (IndexError, ValueError):
            return fail(f"wget: option {item} needs a value\n{usage}")
    if len(urls) != 1:
        return fail(usage)
    if not (to_stdout or spider):  # it would save the body in a file named after the URL's path
        path = urlsplit(urls[0] if "://" in urls[0] else f"http://{urls[0]}").path
        return fail(f"wget: can't open '{path.rsplit('/', 1)[-1] or 'index.html'}': Read-only file system")
    return Wget(urls[0], timeout, quiet, spider)
