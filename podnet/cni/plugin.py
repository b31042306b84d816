"""`podnet-cni`: the CNI plugin binary. A runtime runs it with `CNI_COMMAND` and friends in the
environment and the network configuration on stdin; it asks the node agent over its RPC socket and prints
the spec's JSON (podnet/cni/spec.py): a result for ADD, a version list for VERSION, nothing for the other
commands, or an error object and exit status 1.

The agent's socket is the configuration's `agentSocket` (the conflist the agent writes names its own),
else `$PODNET_AGENT_SOCKET`. `--log FILE` (or `$PODNET_CNI_LOG`) appends each call to FILE as one JSON
line: the CNI_* environment, the configuration, the output and the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from typing import Any

from podnet.cni.spec import (
    LATEST_VERSION,
    Attachment,
    CniError,
    Code,
    Command,
    Request,
    parse_request,
    version_result,
)
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcError, call_once

SOCKET_VARIABLE = "PODNET_AGENT_SOCKET"
LOG_VARIABLE = "PODNET_CNI_LOG"
RPC_TIMEOUT = 20.0
# The agent's RpcError codes (nodeagent/cniserver.py), as the spec's codes.
_AGENT_CODES = {
    "NotFound": Code.UNKNOWN_CONTAINER,
    "BadRequest": Code.INVALID_CONFIG,
    "NotReady": Code.TRY_AGAIN_LATER,
    "Exhausted": Code.ADDRESSES_EXHAUSTED,
}


def agent_socket(request: Request, environ: dict[str, str]) -> str:
    path = request.config.get("agentSocket") or environ.get(SOCKET_VARIABLE)
    if not path:
        raise CniError(Code.INVALID_CONFIG, "invalid network configuration",
                       f"agentSocket is missing (or set {SOCKET_VARIABLE})")
    return str(path)


async def _ask(socket: str, method: AgentMethod, params: dict, unreachable: Code) -> Any:
    try:
        return await call_once(socket, method, params, timeout=RPC_TIMEOUT)
    except RpcError as exc:
        raise CniError(_AGENT_CODES.get(exc.code, Code.AGENT_FAILURE), f"{method} failed", exc.message) from None
    except (OSError, TimeoutError) as exc:
        raise CniError(unreachable, "the podnet node agent is not reachable", f"{socket}: {exc}") from None


async def handle(request: Request, environ: dict[str, str]) -> dict | None:
    """What the plugin prints for `request` (None: nothing), or CniError."""
    if request.command is Command.VERSION:
        return version_result()
    socket = agent_socket(request, environ)
    identity = {"container_id": request.container_id, "ifname": request.ifname}
    if request.command is Command.STATUS:
        status = await _ask(socket, AgentMethod.CNI_STATUS, {}, Code.PLUGIN_NOT_AVAILABLE)
        if not status.get("ready"):
            raise CniError(Code.PLUGIN_NOT_AVAILABLE, "the podnet node agent is not ready", status.get("reason", ""))
        return None
    if request.command is Command.ADD:
        request.port_mappings()  # checked here; the chained portmap plugin carries them out
        request.bandwidth()
        data = await _ask(socket, AgentMethod.CNI_ADD, {**identity, "netns": request.netns, "namespace": request.pod_namespace,
                                                        "name": request.pod_name}, Code.TRY_AGAIN_LATER)
        return Attachment.from_data(data).result(request.version)
    if request.command is Command.CHECK:
        outcome = await _ask(socket, AgentMethod.CNI_CHECK, {**identity, "netns": request.netns,
                                                             "prev_result": request.prev_result}, Code.TRY_AGAIN_LATER)
        if outcome.get("problems"):
            raise CniError(Code.CHECK_FAILED, "CHECK failed", "; ".join(outcome["problems"]))
        return None
    if request.command is Command.DEL:
        await _ask(socket, AgentMethod.CNI_DEL, identity, Code.TRY_AGAIN_LATER)
        return None
    valid = [[a.container_id, a.ifname] for a in request.valid_attachments()]
    await _ask(socket, AgentMethod.CNI_GC, {"valid": valid}, Code.TRY_AGAIN_LATER)
    return None


def invoke(environ: dict[str, str], stdin: bytes) -> tuple[str, int]:
    """One invocation: what to print on stdout and the exit status."""
    version = LATEST_VERSION
    try:
        request = parse_request(environ, stdin)
        version = request.version
        output = asyncio.run(handle(request, environ))
    except CniError as error:
        return error.to_json(version), 1
    return ("" if output is None else json.dumps(output)), 0


def _log(path: str, environ: dict[str, str], stdin: bytes, output: str, status: int) -> None:
    try:
        config: Any = json.loads(stdin) if stdin.strip() else None
    except ValueError:
        config = stdin.decode(errors="replace")
    entry = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
             "env": {k: v for k, v in sorted(environ.items()) if k.startswith("CNI_")},
             "config": config, "stdout": json.loads(output) if output else None, "exit": status}
    with open(path, "a") as file:
        file.write(json.dumps(entry) + "\n")


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="podnet-cni", description="podnet's CNI plugin (spec 1.1)")
    parser.add_argument("--log", default=os.environ.get(LOG_VARIABLE), help="append each call to this file as JSON")
    options = parser.parse_args(argv)
    environ = dict(os.environ)
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as exc:
        stdin = b""
        output, status = CniError(Code.IO_FAILURE, "failed to read the network configuration", str(exc)).to_json(), 1
    else:
        output, status = invoke(environ, stdin)
    if output:
        print(output)
    if options.log:
        _log(options.log, environ, stdin, output, status)
    sys.exit(status)


if __name__ == "__main__":
    run()
