import asyncio
import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.rpc.framing import Decoder, FramingError, Notification, Request, Response, encode
from podnet.rpc.session import RpcClient, RpcError, RpcServer


@given(st.lists(st.tuples(st.integers(0, 2**31), st.text(max_size=10), st.integers(-(2**63), 2**64 - 1)), max_size=5),
       st.integers(1, 17))
def test_framing_round_trip_in_any_chunking(calls, chunk):
    messages = [Request(i, m, p) for i, m, p in calls] + [Response(1, None, [1, 2]), Notification("n", {"a": 1})]
    data = b"".join(encode(m) for m in messages)
    decoder = Decoder()
    out = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert out == messages


@pytest.mark.parametrize("raw", [msgpack.packb({"a": 1}), msgpack.packb([7, 1, 2, 3]), msgpack.packb([0, "x", "m", 1]),
                                 b"\xc1", b"\x94\x00\x01\xa1m\x81\x91\x01\x02"])
def test_framing_rejects_what_is_not_msgpack_rpc(raw):
    with pytest.raises(FramingError):
        Decoder().feed(raw)


@given(st.binary(max_size=200), st.integers(1, 17))
def test_framing_turns_any_bytes_into_messages_or_a_framing_error(data, chunk):
    decoder = Decoder()
    with contextlib.suppress(FramingError):
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])


async def test_server_and_client_over_a_unix_socket(tmp_path):
    async def add(params):
        return params["a"] + params["b"]

    async def fail(params):
        raise RpcError("NotFound", "no such pod")

    async def boom(params):
        raise RuntimeError("bug")

    async def count(params):
        for i in range(params):
            yield i

    server = RpcServer(str(tmp_path / "s.sock"), {"add": add, "fail": fail, "boom": boom, "count": count})
    await server.start()
    try:
        async with RpcClient(server.path) as client:
            assert await client.call("ping") == "pong"
            results = await asyncio.gather(*(client.call("add", {"a": i, "b": 1}) for i in range(50)))
            assert results == [i + 1 for i in range(50)]
            with pytest.raises(RpcError) as err:
                await client.call("fail")
            assert err.value.code == "NotFound"
            with pytest.raises(RpcError, match="Internal"):
                await client.call("boom")
            with pytest.raises(RpcError, match="MethodNotFound"):
                await client.call("nope")
            assert [i async for i in client.stream("count", 5)] == [0, 1, 2, 3, 4]
        # A peer that sends garbage is disconnected and counted; the server keeps serving others.
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(msgpack.packb({"not": "rpc"}))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.malformed_frames == 1
        async with RpcClient(server.path) as client:
            assert await client.call("add", {"a": 2, "b": 2}) == 4
    finally:
        await server.close()


async def test_a_server_of_named_parameters_refuses_others_before_the_handler(tmp_path):
    seen = []

    async def record(params):
        seen.append(params)
        return params

    server = RpcServer(str(tmp_path / "s.sock"), {"record": record}, named_params=True)
    await server.start()
    try:
        async with RpcClient(server.path) as client:
            assert await client.call("record", {"a": 1}) == {"a": 1}
            assert await client.call("record") == {}
            for params in (5, "a", [1], b"x", 1.5, True):
                with pytest.raises(RpcError, match="BadRequest: record takes a map of parameters"):
                    await client.call("record", params)
        assert seen == [{"a": 1}, {}]
    finally:
        await server.close()


@pytest.mark.parametrize("length", [107, 108, 200])
async def test_a_socket_deeper_than_a_unix_address_holds_is_served_and_reached(tmp_path, length):
    """A state directory under a long temporary one puts the agent's socket past sun_path's 108 bytes
    (107 and a NUL at most)."""
    deep = tmp_path / ("d" * max(1, length - len(str(tmp_path)) - len("/agent.sock") - 1))
    deep.mkdir(parents=True)
    path = str(deep / "agent.sock")
    assert len(path) == length

    async def echo(params):
        return params

    server = RpcServer(path, {"echo": echo})
    await server.start()
    try:
        assert (deep / "agent.sock").stat().st_mode & 0o777 == 0o600
        async with RpcClient(path) as client:
            assert await client.call("echo", "deep") == "deep"
    finally:
        await server.close()
    assert not (deep / "agent.sock").exists()
