"""SPDY/3 frames and the server session, without sockets: golden bytes captured from kubectl 1.32's
port-forward, round trips, flow control, fuzzing, and the port-forward stream pairing."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.codec import DecodeError
from podnet.spdy import session as spdy
from podnet.spdy.frames import (
    DICTIONARY,
    FLAG_FIN,
    Data,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
    decode_header_block,
    encode_header_block,
)
from podnet.spdy.portforward import Pair, Rejected, StreamPairs, TimedOut

# What kubectl wrote into its WebSocket for `kubectl port-forward pod/web 18081:80` and one curl: the
# error stream's SYN_STREAM (the first header block: the zlib header names the dictionary's Adler-32),
# its FIN, then the data stream's SYN_STREAM, whose block continues the same zlib stream.
KUBECTL_ERROR_SYN = bytes.fromhex(
    "800300010000003d000000010000000000007"
    "8f9e3c6a7c202253a060606ce2248fc6482d22da30138e59514a526e6420b17d65450d0430aea2250a266b23000000000ffff"
)
KUBECTL_ERROR_FIN = bytes.fromhex("0000000101000000")
KUBECTL_DATA_SYN = bytes.fromhex("800300010000001c0000000300000000000082" "6a4555082a851231d4a1190f000000ffff")


def test_dictionary_is_the_one_kubectl_primes_zlib_with() -> None:
    assert len(DICTIONARY) == 1423
    assert zlib.adler32(DICTIONARY).to_bytes(4, "big") == KUBECTL_ERROR_SYN[20:24]


def test_kubectl_golden_frames_decode() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(KUBECTL_ERROR_SYN + KUBECTL_ERROR_FIN + KUBECTL_DATA_SYN)
    assert frames == [
        SynStream(1, (("requestid", "0"), ("streamtype", "error"), ("port", "80"))),
        Data(1, b"", FLAG_FIN),
        SynStream(3, (("streamtype", "data"), ("port", "80"), ("requestid", "0"))),
    ]


def test_kubectl_golden_frames_decode_byte_by_byte() -> None:
    decoder = FrameDecoder()
    wire = KUBECTL_ERROR_SYN + KUBECTL_ERROR_FIN + KUBECTL_DATA_SYN
    frames = [frame for i in range(len(wire)) for frame in decoder.feed(wire[i:i + 1])]
    assert [type(f).__name__ for f in frames] == ["SynStream", "Data", "SynStream"]


def test_our_header_blocks_inflate_with_a_fresh_zlib_primed_with_the_dictionary() -> None:
    """What a Go peer does: zlib.NewReaderDict over the concatenated blocks of one direction."""
    encoder = FrameEncoder()
    first = encoder.encode(SynReply(1, ()))
    second = encoder.encode(SynReply(3, (("a", "b"),)))
    inflate = zlib.decompressobj(zdict=DICTIONARY)
    assert inflate.decompress(first[12:]) == encode_header_block(())
    assert inflate.decompress(second[12:]) == encode_header_block((("a", "b"),))


@pytest.mark.parametrize(
    "frame, wire",
    [
        (Data(3, b"hi", FLAG_FIN), "00000003010000026869"),
        (RstStream(5, RstStatus.CANCEL), "800300030000000800000005" "00000005"),
        (Settings(((0, Setting.INITIAL_WINDOW_SIZE, 65536),)), "800300040000000c00000001" "0000000700010000"),
        (Ping(7), "800300060000000400000007"),
        (GoAway(9, 0), "80030007000000080000000900000000"),
        (WindowUpdate(3, 4096), "80030009000000080000000300001000"),
    ],
)
def test_frames_without_headers_have_fixed_bytes(frame: object, wire: str) -> None:
    assert FrameEncoder().encode(frame).hex() == wire
    assert FrameDecoder().feed(bytes.fromhex(wire)) == [frame]


headers = st.lists(
    st.tuples(st.text("abcdefghijklmnopqrstuvwxyz-:", min_size=1, max_size=12), st.text(max_size=40)),
    max_size=6,
    unique_by=lambda pair: pair[0],
).map(tuple)
stream_ids = st.integers(0, 0x7FFF_FFFF)
frames = st.one_of(
    st.builds(SynStream, stream_ids, headers, stream_ids, st.integers(0, 7), st.integers(0, 3)),
    st.builds(SynReply, stream_ids, headers, st.integers(0, 1)),
    st.builds(HeadersFrame, stream_ids, headers, st.integers(0, 1)),
    st.builds(RstStream, stream_ids, st.integers(0, 2**32 - 1)),
    st.builds(Settings, st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**24 - 1), st.integers(0, 2**32 - 1)), max_size=4).map(tuple)),
    st.builds(Ping, st.integers(0, 2**32 - 1)),
    st.builds(GoAway, stream_ids, st.integers(0, 2**32 - 1)),
    st.builds(WindowUpdate, stream_ids, st.integers(1, 0x7FFF_FFFF)),
    st.builds(Data, stream_ids, st.binary(max_size=200), st.integers(0, 255)),
)


@given(st.lists(frames, max_size=8), st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_frames_round_trip_in_any_pieces(sequence: list, piece: int) -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(frame) for frame in sequence)
    decoded = [frame for i in range(0, len(wire), piece) for frame in decoder.feed(wire[i:i + piece])]
    assert decoded == sequence


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_fuzzed_bytes_give_frames_or_a_decode_error(data: bytes) -> None:
    try:
        FrameDecoder().feed(data)
    except DecodeError:
        pass


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_fuzzed_header_blocks_after_a_valid_frame_give_frames_or_a_decode_error(junk: bytes) -> None:
    frame = struct.pack("!HHI", 0x8003, 2, len(junk) + 4) + struct.pack("!I", 1) + junk
    try:
        FrameDecoder().feed(KUBECTL_ERROR_SYN + frame)
    except DecodeError:
        pass


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_the_session_survives_any_bytes(data: bytes) -> None:
    session = spdy.ServerSession()
    events = session.receive_data(data)
    assert all(isinstance(e, spdy.Event.__args__) for e in events)  # type: ignore[attr-defined]
    session.data_to_send()


@pytest.mark.parametrize(
    "block, message",
    [
        (encode_header_block((("Port", "80"),)), "not lowercase"),
        (encode_header_block((("", "80"),)), "empty"),
        (struct.pack("!I", 2) + encode_header_block((("port", "80"),))[4:] * 2, "repeated"),
        (struct.pack("!II", 1, 10) + b"port", "truncated"),
        (struct.pack("!I", 1_000_000), "claims"),
        (encode_header_block((("port", "80"),)) + b"x", "after the header block"),
    ],
)
def test_bad_header_blocks(block: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_header_block(block)


def test_a_zlib_bomb_is_refused() -> None:
    deflate = zlib.compressobj(zdict=DICTIONARY)
    block = deflate.compress(encode_header_block((("x", "a" * 400_000),))) + deflate.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack("!HHI", 0x8003, 2, len(block) + 4) + struct.pack("!I", 1) + block
    with pytest.raises(DecodeError, match="inflates beyond"):
        FrameDecoder().feed(frame)


# ---- the session -----------------------------------------------------------------------------------


class Client:
    """The peer's side: kubectl's frames in, the session's frames decoded."""

    def __init__(self) -> None:
        self.session = spdy.ServerSession()
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()

    def send(self, *frames: object) -> list[spdy.Event]:
        return self.session.receive_data(b"".join(self.encoder.encode(f) for f in frames))

    def received(self) -> list[object]:
        return self.decoder.feed(self.session.data_to_send())


def test_kubectl_bytes_open_two_streams_that_are_accepted_and_answered() -> None:
    session = spdy.ServerSession()
    events = session.receive_data(KUBECTL_ERROR_SYN + KUBECTL_ERROR_FIN + KUBECTL_DATA_SYN)
    assert events == [
        spdy.StreamOpened(1, (("requestid", "0"), ("streamtype", "error"), ("port", "80"))),
        spdy.StreamEnded(1),
        spdy.StreamOpened(3, (("streamtype", "data"), ("port", "80"), ("requestid", "0"))),
    ]
    session.accept(1)
    session.accept(3)
    session.send(3, b"hello")
    session.end(3)
    assert FrameDecoder().feed(session.data_to_send()) == [
        SynReply(1, ()), SynReply(3, ()), Data(3, b"hello"), Data(3, b"", FLAG_FIN)
    ]


def test_pings_from_the_client_are_echoed_and_our_own_ids_are_not() -> None:
    client = Client()
    client.send(Ping(1), Ping(2))
    assert client.received() == [Ping(1)]


def test_without_flow_control_from_the_peer_nothing_waits_for_windows() -> None:
    """kubectl sends no WINDOW_UPDATE: a megabyte goes out at once, and a megabyte comes in unrefused."""
    client = Client()
    client.send(SynStream(1, (("streamtype", "data"), ("port", "80"))))
    client.session.accept(1)
    client.session.send(1, b"x" * (1 << 20))
    sent = client.received()
    assert sum(len(f.data) for f in sent if isinstance(f, Data)) == 1 << 20
    events = client.send(*(Data(1, b"y" * 16384) for _ in range(64)))
    assert sum(len(e.data) for e in events if isinstance(e, spdy.DataReceived)) == 1 << 20
    client.session.consumed(1, 1 << 20)
    assert not [f for f in client.received() if isinstance(f, WindowUpdate)]


def test_with_flow_control_sends_stop_at_the_window_and_resume_on_window_update() -> None:
    client = Client()
    client.send(SynStream(1, ()), WindowUpdate(0, 1))  # the peer takes part in flow control
    client.session.accept(1)
    client.session.send(1, b"x" * 100_000)
    client.session.end(1)
    first = [f for f in client.received() if isinstance(f, Data)]
    assert sum(len(f.data) for f in first) == spdy.INITIAL_WINDOW
    assert not any(f.fin for f in first)
    assert client.session.buffered(1) == 100_000 - spdy.INITIAL_WINDOW
    assert client.send(WindowUpdate(0, 50_000)) == []  # the session's window opens, not yet the stream's
    assert client.send(WindowUpdate(1, 50_000)) == [spdy.WindowOpened(1)]
    rest = [f for f in client.received() if isinstance(f, Data)]
    assert sum(len(f.data) for f in rest) == 100_000 - spdy.INITIAL_WINDOW
    assert rest[-1] == Data(1, b"", FLAG_FIN) and client.session.buffered(1) == 0


def test_with_flow_control_the_receive_window_reopens_as_data_is_consumed() -> None:
    client = Client()
    client.send(Settings(((0, Setting.INITIAL_WINDOW_SIZE, 65536),)), SynStream(1, ()))
    client.session.accept(1)
    client.send(Data(1, b"z" * 40_000))
    client.session.consumed(1, 40_000)
    updates = [f for f in client.received() if isinstance(f, WindowUpdate)]
    assert updates == [WindowUpdate(0, 40_000), WindowUpdate(1, 40_000)]


def test_with_flow_control_a_flood_beyond_the_window_is_a_protocol_error() -> None:
    client = Client()
    client.send(WindowUpdate(0, 1), SynStream(1, ()))
    client.session.accept(1)
    events = client.send(*(Data(1, b"f" * 16384) for _ in range(5)))
    assert isinstance(events[-1], spdy.SessionEnded) and "flow-control window" in events[-1].error
    assert GoAway(1, 1) in client.received()


def test_stream_ids_must_be_odd_and_increasing() -> None:
    client = Client()
    client.send(SynStream(3, ()))
    events = client.send(SynStream(1, ()))
    assert isinstance(events[0], spdy.SessionEnded) and "odd and increasing" in events[0].error


def test_data_for_an_unknown_stream_is_reset_and_the_session_goes_on() -> None:
    client = Client()
    assert client.send(Data(5, b"?")) == []
    assert client.received() == [RstStream(5, RstStatus.INVALID_STREAM)]
    assert client.send(SynStream(1, ())) == [spdy.StreamOpened(1, ())]


def test_a_reset_stream_is_reported_and_no_longer_usable() -> None:
    client = Client()
    client.send(SynStream(1, ()))
    client.session.accept(1)
    assert client.send(RstStream(1, RstStatus.CANCEL)) == [spdy.StreamReset(1, RstStatus.CANCEL)]
    with pytest.raises(spdy.LocalProtocolError):
        client.session.send(1, b"late")


def test_goaway_ends_the_session() -> None:
    client = Client()
    assert client.send(GoAway(0)) == [spdy.SessionEnded(0)]
    assert client.session.ended


# ---- port-forward stream pairs ----------------------------------------------------------------------


def test_a_pair_completes_with_its_second_stream() -> None:
    pairs = StreamPairs()
    assert pairs.add(1, (("streamtype", "error"), ("port", "80"), ("requestid", "0")), 0.0) is None
    assert pairs.add(3, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), 0.0) == Pair("0", 80, 3, 1)


def test_interleaved_pairs_are_told_apart_by_request_id() -> None:
    pairs = StreamPairs()
    assert pairs.add(1, (("streamtype", "error"), ("port", "80"), ("requestid", "0")), 0.0) is None
    assert pairs.add(3, (("streamtype", "error"), ("port", "80"), ("requestid", "1")), 0.0) is None
    assert pairs.add(5, (("streamtype", "data"), ("port", "80"), ("requestid", "1")), 0.0) == Pair("1", 80, 5, 3)
    assert pairs.add(7, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), 0.0) == Pair("0", 80, 7, 1)


def test_without_request_ids_stream_ids_pair_as_the_kubelet_pairs_them() -> None:
    pairs = StreamPairs()
    assert pairs.add(1, (("streamtype", "error"), ("port", "80")), 0.0) is None
    assert pairs.add(3, (("streamtype", "data"), ("port", "80")), 0.0) == Pair("1", 80, 3, 1)


@pytest.mark.parametrize(
    "headers, reason",
    [
        ((("streamtype", "data"),), '"port" header is required'),
        ((("streamtype", "data"), ("port", "http")), 'unable to parse "http" as a port'),
        ((("streamtype", "data"), ("port", "70000")), 'unable to parse "70000" as a port'),
        ((("streamtype", "stdin"), ("port", "80")), 'invalid stream type "stdin"'),
    ],
)
def test_streams_the_kubelet_would_refuse(headers: tuple, reason: str) -> None:
    assert StreamPairs().add(1, headers, 0.0) == Rejected(1, reason)


def test_a_half_pair_times_out_as_the_kubelets_does() -> None:
    pairs = StreamPairs()
    assert pairs.add(1, (("streamtype", "error"), ("port", "80"), ("requestid", "0")), 10.0) is None
    assert pairs.add(3, (("streamtype", "data"), ("port", "81"), ("requestid", "1")), 20.0) is None
    assert pairs.expire(39.0) == []
    assert pairs.expire(40.0) == [TimedOut(None, 1)]
    assert pairs.expire(50.0) == [TimedOut(3, None)]
    # Its partner, when it comes at last, starts a pair of its own.
    assert pairs.add(5, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), 51.0) is None


def test_a_second_data_stream_for_one_request_is_refused() -> None:
    pairs = StreamPairs()
    pairs.add(1, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), 0.0)
    assert pairs.add(3, (("streamtype", "data"), ("port", "80"), ("requestid", "0")), 0.0) == Rejected(3, "data stream already assigned")


@given(
    st.lists(st.one_of(st.tuples(st.just("send"), st.integers(1, 40_000)),
                       st.tuples(st.just("update"), st.integers(1, 50_000))), max_size=30)
)
@settings(max_examples=200, deadline=None)
def test_with_flow_control_what_goes_out_is_in_order_and_never_beyond_the_windows(steps: list) -> None:
    client = Client()
    client.send(SynStream(1, ()), WindowUpdate(0, 1))
    client.session.accept(1)
    client.received()
    sent, received = bytearray(), bytearray()
    stream_window = session_window = spdy.INITIAL_WINDOW  # as the peer counts them
    session_window += 1
    for index, (step, size) in enumerate(steps):
        if step == "send":
            chunk = bytes([index % 251]) * size
            sent += chunk
            client.session.send(1, chunk)
        else:
            client.send(WindowUpdate(1, size), WindowUpdate(0, size))
            stream_window += size
            session_window += size
        for frame in client.received():
            assert isinstance(frame, Data) and frame.stream_id == 1
            received += frame.data
            stream_window -= len(frame.data)
            session_window -= len(frame.data)
            assert stream_window >= 0 and session_window >= 0
    assert bytes(received) == bytes(sent[:len(received)])
    assert len(received) + client.session.buffered(1) == len(sent)
