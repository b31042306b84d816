"""The endpoints the agent holds in the pod network, one type for each kind of answerer:

- `StackEndpoint`: an address a userspace stack inside the agent answers. The node's own endpoint on the
  gateway address is one (it answers pods that ping their gateway);
- `VirtualPod`: a pod whose stack is such a userspace stack; `RelayedPod`, one some of whose ports a host
  process serves (relaypods.py);
- `KernelPod`: a netns pod, whose kernel stack answers through its TAP device.

The dataplane tells them apart by type, once per delivered batch, so none carries fields for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from podnet.nodeagent.pods.netns import NetnsPod
    from podnet.nodeagent.pods.virtual.stack import PodStack
    from podnet.nodeagent.virtualruns import VirtualRun
    from podnet.overlay.pipeline.model import PodPort


@dataclass(slots=True)
class StackEndpoint:
    uid: str
    port: PodPort
    stack: PodStack
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0
    waiting: dict[int, asyncio.Future] = field(default_factory=dict)  # op -> its Completed or Failed
    listeners: dict[int, Callable[[Any], None]] = field(default_factory=dict)  # op -> stream events


@dataclass(slots=True)
class VirtualPod(StackEndpoint):
    status_ip: str | None = None  # the podIP the API last heard from us
    run: VirtualRun | None = None  # a Job's pod's command, while and after it runs


@dataclass(slots=True)
class RelayedPod(VirtualPod):
    pass


@dataclass(slots=True)
class KernelPod:
    uid: str
    port: PodPort
    netns: NetnsPod
    status_ip: str | None = None  # the podIP the API last heard from us


# What the agent keeps per pod it runs ("ns/name" -> pod).
LocalPod = VirtualPod | KernelPod
