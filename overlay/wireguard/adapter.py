"""The WireGuard device on the event loop: `DeviceDriver` feeds the pure `Device`, sends what it
produces, hands decrypted packets to `on_packet` and keeps one `call_at` armed no later than the
device's earliest deadline; `WireGuardEndpoint` is that on an asyncio datagram socket. No protocol decision is
made here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .device import Address, Device, Event, PacketReceived


class DeviceDriver:
    """Whoever owns the socket calls `flush()` after feeding the device; `sendto` puts a datagram on it."""

    def __init__(
        self,
        device: Device,
        sendto: Callable[[bytes, Address], None],
        on_packet: Callable[[bytes, bytes], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.device = device
        self.sendto = sendto
        self.on_packet = on_packet or (lambda peer, packet: None)
        self.on_event = on_event or (lambda event: None)
        self.loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        device.wall_clock_offset = time.time() - self.loop.time()

    @property
    def timer_deadline(self) -> float | None:
        return None if self._timer is None else self._timer.when()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self.device.handle_timer(self.loop.time())
        self.flush()

    def flush(self) -> None:
        for datagram, address in self.device.datagrams_to_send():
            self.sendto(datagram, address)
        while (event := self.device.next_event()) is not None:
            if isinstance(event, PacketReceived):
                self.on_packet(event.peer, event.packet)
            else:
                self.on_event(event)
        # The device's deadlines move at every packet (a keepalive owed, a reply awaited): the timer is
        # moved only when something is due sooner than it fires; firing early costs one idle
        # handle_timer, and re-arms it at what is due then.
        deadline = self.device.get_timer()
        if deadline is not None and (self._timer is None or deadline < self._timer.when()):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer)


class WireGuardEndpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        device: Device,
        on_packet: Callable[[bytes, bytes], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.device = device
        self.transport: asyncio.DatagramTransport | None = None
        self._driver = DeviceDriver(device, self._sendto, on_packet, on_event)
        self._loop = self._driver.loop

    @classmethod
    async def open(cls, device: Device, host: str, port: int, **callbacks) -> WireGuardEndpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(lambda: cls(device, **callbacks), local_addr=(host, port))
        return endpoint

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    @property
    def timer_deadline(self) -> float | None:
        return self._driver.timer_deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.device.receive_datagram(data, addr[:2], self._loop.time())
        self._driver.flush()

    def send_packet(self, packet: bytes) -> None:
        self.device.send_packet(packet, self._loop.time())
        self._driver.flush()

    def close(self) -> None:
        self._driver.close()
        if self.transport is not None:
            self.transport.close()

    def _sendto(self, datagram: bytes, address: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(datagram, address)
