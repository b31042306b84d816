"""BGP-4 messages (RFC 4271) for IPv4 unicast, pure: bytes in, objects out, and back.

Capabilities: multiprotocol IPv4 unicast (RFC 4760), route refresh (RFC 2918), graceful restart (RFC 4724),
4-octet AS numbers (RFC 6793; AS_PATH is always carried with 4-octet ASNs, so a session needs the
capability). Every decoding failure raises `BgpError(code, subcode, data)`, which is exactly the
NOTIFICATION to send. Errors inside path attributes do not raise: following RFC 7606 the UPDATE decodes
with `treat_as_withdraw` set, and its NLRI must be handled as withdrawn.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from enum import IntEnum

MARKER = b"\xff" * 16
HEADER_LENGTH = 19
MAX_MESSAGE_LENGTH = 4096
VERSION = 4
AS_TRANS = 23456
AFI_IPV4, SAFI_UNICAST = 1, 1

_HEADER = struct.Struct("!16sHB")
_OPEN = struct.Struct("!BHH4sB")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class MessageType(IntEnum):
    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5


class ErrorCode(IntEnum):
    MESSAGE_HEADER = 1
    OPEN_MESSAGE = 2
    UPDATE_MESSAGE = 3
    HOLD_TIMER_EXPIRED = 4
    FSM = 5
    CEASE = 6


class HeaderError(IntEnum):
    CONNECTION_NOT_SYNCHRONIZED = 1
    BAD_MESSAGE_LENGTH = 2
    BAD_MESSAGE_TYPE = 3


class OpenError(IntEnum):
    UNSUPPORTED_VERSION = 1
    BAD_PEER_AS = 2
    BAD_BGP_IDENTIFIER = 3
    UNSUPPORTED_OPTIONAL_PARAMETER = 4
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7


class UpdateError(IntEnum):
    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
    MISSING_WELL_KNOWN_ATTRIBUTE = 3
    ATTRIBUTE_FLAGS_ERROR = 4
    ATTRIBUTE_LENGTH_ERROR = 5
    INVALID_ORIGIN = 6
    INVALID_NEXT_HOP = 8
    OPTIONAL_ATTRIBUTE_ERROR = 9
    INVALID_NETWORK_FIELD = 10
    MALFORMED_AS_PATH = 11


class CeaseError(IntEnum):
    MAXIMUM_PREFIXES_REACHED = 1  # RFC 4486
    ADMINISTRATIVE_SHUTDOWN = 2
    PEER_DECONFIGURED = 3
    ADMINISTRATIVE_RESET = 4
    CONNECTION_REJECTED = 5
    CONNECTION_COLLISION = 7


class CapabilityCode(IntEnum):
    MULTIPROTOCOL = 1
    ROUTE_REFRESH = 2
    GRACEFUL_RESTART = 64
    FOUR_OCTET_AS = 65


class AttributeType(IntEnum):
    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7


class Origin(IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class SegmentType(IntEnum):
    AS_SET = 1
    AS_SEQUENCE = 2


# Attribute flag bits (RFC 4271 4.3).
OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED_LENGTH = 0x80, 0x40, 0x20, 0x10
WELL_KNOWN = TRANSITIVE
GR_RESTART_STATE = 0x8  # "R" in the 4 high bits of the restart flags/time field
GR_FORWARDING_PRESERVED = 0x80


class BgpError(ValueError):
    """Bad input from a peer, carrying the NOTIFICATION (code, subcode, data) that reports it."""

    def __init__(self, code: int, subcode: int = 0, data: bytes = b"", reason: str = ""):
        super().__init__(reason or f"BGP error {code}/{subcode}")
        self.code = code
        self.subcode = subcode
        self.data = bytes(data)
        self.reason = reason or f"BGP error {code}/{subcode}"

    def notification(self) -> Notification:
        return Notification(self.code, self.subcode, self.data)


# ---- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Prefix:
    """An IPv4 prefix as an integer network address and a length; host bits are always zero."""

    address: int
    length: int

    # Prefixes key every RIB table: hashing and comparing without building tuples halves lookup time.
    def __hash__(self) -> int:
        return self.address << 6 | self.length

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prefix) and self.address == other.address and self.length == other.length

    @classmethod
    def parse(cls, text: str) -> Prefix:
        network, _, length_text = text.partition("/")
        length = int(length_text) if length_text else 32
        if not 0 <= length <= 32:
            raise ValueError(f"bad prefix length in {text!r}")
        address = _U32.unpack(_inet_aton(network))[0]
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        if address & ~mask:
            raise ValueError(f"{text!r} has host bits set")
        return cls(address, length)

    def __str__(self) -> str:
        return f"{_inet_ntoa(_U32.pack(self.address))}/{self.length}"


def _inet_aton(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return bytes(int(p) for p in parts)


def _inet_ntoa(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


_next_hop_text = functools.lru_cache(maxsize=4096)(_inet_ntoa)  # next hops repeat in every UPDATE of a table


# ---- capabilities ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Multiprotocol:
    afi: int = AFI_IPV4
    safi: int = SAFI_UNICAST


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    pass


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    restart_time: int  # seconds, 12 bits
    restarting: bool = False
    families: tuple[tuple[int, int, int], ...] = ((AFI_IPV4, SAFI_UNICAST, 0),)  # (afi, safi, flags)


@dataclass(frozen=True, slots=True)
class FourOctetAs:
    asn: int


@dataclass(frozen=True, slots=True)
class UnknownCapability:
    code: int
    value: bytes


Capability = Multiprotocol | RouteRefresh | GracefulRestart | FourOctetAs | UnknownCapability


def _decode_capability(code: int, value: bytes) -> Capability:
    def bad() -> BgpError:
        return BgpError(ErrorCode.OPEN_MESSAGE, 0, reason=f"malformed capability {code} ({value.hex()})")

    if code == CapabilityCode.MULTIPROTOCOL:
        if len(value) != 4:
            raise bad()
        return Multiprotocol(_U16.unpack_from(value)[0], value[3])
    if code == CapabilityCode.ROUTE_REFRESH:
        if value:
            raise bad()
        return RouteRefresh()
    if code == CapabilityCode.FOUR_OCTET_AS:
        if len(value) != 4:
            raise bad()
        return FourOctetAs(_U32.unpack(value)[0])
    if code == CapabilityCode.GRACEFUL_RESTART:
        if len(value) < 2 or (len(value) - 2) % 4:
            raise bad()
        head = _U16.unpack_from(value)[0]
        families = tuple((_U16.unpack_from(value, i)[0], value[i + 2], value[i + 3]) for i in range(2, len(value), 4))
        return GracefulRestart(head & 0x0FFF, bool(head >> 12 & GR_RESTART_STATE), families)
    return UnknownCapability(code, bytes(value))


def _encode_capability(capability: Capability) -> bytes:
    if isinstance(capability, Multiprotocol):
        code, value = CapabilityCode.MULTIPROTOCOL, struct.pack("!HBB", capability.afi, 0, capability.safi)
    elif isinstance(capability, RouteRefresh):
        code, value = CapabilityCode.ROUTE_REFRESH, b""
    elif isinstance(capability, FourOctetAs):
        code, value = CapabilityCode.FOUR_OCTET_AS, _U32.pack(capability.asn)
    elif isinstance(capability, GracefulRestart):
        head = (GR_RESTART_STATE << 12 if capability.restarting else 0) | (capability.restart_time & 0x0FFF)
        code = CapabilityCode.GRACEFUL_RESTART
        value = _U16.pack(head) + b"".join(struct.pack("!HBB", *family) for family in capability.families)
    else:
        code, value = capability.code, capability.value
    return bytes([code, len(value)]) + value


# ---- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    my_as: int  # the 2-octet field: AS_TRANS when the real ASN needs 4 octets
    hold_time: int
    router_id: str
    capabilities: tuple[Capability, ...] = ()
    version: int = VERSION

    @classmethod
    def build(cls, asn: int, hold_time: int, router_id: str, capabilities: tuple[Capability, ...] = ()) -> Open:
        caps = tuple(c for c in capabilities if not isinstance(c, FourOctetAs)) + (FourOctetAs(asn),)
        return cls(asn if asn <= 0xFFFF else AS_TRANS, hold_time, router_id, caps)

    @property
    def asn(self) -> int:
        """The speaker's real ASN: the 4-octet capability's when present."""
        return next((c.asn for c in self.capabilities if isinstance(c, FourOctetAs)), self.my_as)

    def capability(self, kind: type) -> Capability | None:
        return next((c for c in self.capabilities if isinstance(c, kind)), None)


@dataclass(frozen=True, slots=True)
class OriginAttribute:
    origin: Origin
    flags: int = WELL_KNOWN


@dataclass(frozen=True, slots=True)
class AsPath:
    segments: tuple[tuple[SegmentType, tuple[int, ...]], ...] = ()
    flags: int = WELL_KNOWN

    @classmethod
    def sequence(cls, *asns: int) -> AsPath:
        return cls(((SegmentType.AS_SEQUENCE, tuple(asns)),) if asns else ())

    @property
    def length(self) -> int:
        """Path length for best-path selection: an AS_SET counts as one (RFC 4271 9.1.2.2)."""
        return sum(len(asns) if kind == SegmentType.AS_SEQUENCE else 1 for kind, asns in self.segments)

    @property
    def asns(self) -> tuple[int, ...]:
        return tuple(a for _, asns in self.segments for a in asns)

    @property
    def first_as(self) -> int | None:
        for kind, asns in self.segments:
            if kind == SegmentType.AS_SEQUENCE and asns:
                return asns[0]
        return None

    def prepend(self, asn: int) -> AsPath:
        if self.segments and self.segments[0][0] == SegmentType.AS_SEQUENCE and len(self.segments[0][1]) < 255:
            first = (SegmentType.AS_SEQUENCE, (asn, *self.segments[0][1]))
            return AsPath((first, *self.segments[1:]), self.flags)
        return AsPath(((SegmentType.AS_SEQUENCE, (asn,)), *self.segments), self.flags)

    def __str__(self) -> str:
        return " ".join(" ".join(map(str, asns)) if kind == SegmentType.AS_SEQUENCE
                        else "{" + ",".join(map(str, asns)) + "}" for kind, asns in self.segments)


@dataclass(frozen=True, slots=True)
class NextHop:
    address: str
    flags: int = WELL_KNOWN


@dataclass(frozen=True, slots=True)
class MultiExitDisc:
    value: int
    flags: int = OPTIONAL


@dataclass(frozen=True, slots=True)
class LocalPref:
    value: int
    flags: int = WELL_KNOWN


@dataclass(frozen=True, slots=True)
class OtherAttribute:
    """An attribute carried as bytes: ATOMIC_AGGREGATE, AGGREGATOR, or an unknown optional transitive
    one (communities, ...), which is kept and passed on with the partial bit set (RFC 4271 5)."""

    type_code: int
    value: bytes
    flags: int = OPTIONAL | TRANSITIVE


Attribute = OriginAttribute | AsPath | NextHop | MultiExitDisc | LocalPref | OtherAttribute


@dataclass(frozen=True, slots=True)
class Update:
    withdrawn: tuple[Prefix, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nlri: tuple[Prefix, ...] = ()
    # RFC 7606: an attribute error that leaves the NLRI readable; every prefix in `nlri` is withdrawn.
    treat_as_withdraw: BgpError | None = field(default=None, compare=False)

    @property
    def is_end_of_rib(self) -> bool:
        return not self.withdrawn and not self.attributes and not self.nlri and self.treat_as_withdraw is None

    def attribute(self, kind: type) -> Attribute | None:
        return next((a for a in self.attributes if isinstance(a, kind)), None)


END_OF_RIB = Update()


@dataclass(frozen=True, slots=True)
class Notification:
    code: int
    subcode: int = 0
    data: bytes = b""

    def __str__(self) -> str:
        try:
            name = ErrorCode(self.code).name.lower().replace("_", " ")
        except ValueError:
            name = f"code {self.code}"
        return f"{name} ({self.code}/{self.subcode}){' ' + self.data.hex() if self.data else ''}"


@dataclass(frozen=True, slots=True)
class Keepalive:
    pass


@dataclass(frozen=True, slots=True)
class RouteRefreshRequest:
    afi: int = AFI_IPV4
    safi: int = SAFI_UNICAST


Message = Open | Update | Notification | Keepalive | RouteRefreshRequest
KEEPALIVE = Keepalive()

_MESSAGE_TYPES = {Open: MessageType.OPEN, Update: MessageType.UPDATE, Notification: MessageType.NOTIFICATION,
                  Keepalive: MessageType.KEEPALIVE, RouteRefreshRequest: MessageType.ROUTE_REFRESH}
# Smallest legal total length per type, and whether the length is fixed (RFC 4271 6.1).
_LENGTH_RULES = {MessageType.OPEN: (29, False), MessageType.UPDATE: (23, False),
                 MessageType.NOTIFICATION: (21, False), MessageType.KEEPALIVE: (19, True),
                 MessageType.ROUTE_REFRESH: (23, True)}


# ---- framing --------------------------------------------------------------------------------------


def frame_length(buffer: bytes | bytearray | memoryview) -> int | None:
    """The length of the message at the start of `buffer` once its header is complete (checked), else None."""
    if len(buffer) < HEADER_LENGTH:
        return None
    marker, length, kind = _HEADER.unpack_from(buffer)
    if marker != MARKER:
        raise BgpError(ErrorCode.MESSAGE_HEADER, HeaderError.CONNECTION_NOT_SYNCHRONIZED, reason="bad marker")
    if kind not in _LENGTH_RULES:
        raise BgpError(ErrorCode.MESSAGE_HEADER, HeaderError.BAD_MESSAGE_TYPE, bytes([kind]),
                       reason=f"unknown message type {kind}")
    minimum, fixed = _LENGTH_RULES[MessageType(kind)]
    if length < minimum or length > MAX_MESSAGE_LENGTH or (fixed and length != minimum):
        raise BgpError(ErrorCode.MESSAGE_HEADER, HeaderError.BAD_MESSAGE_LENGTH, _U16.pack(length),
                       reason=f"bad length {length} for a type {kind} message")
    return length


def decode(message: bytes | bytearray | memoryview) -> Message:
    """Decodes exactly one whole message (header included)."""
    length = frame_length(message)
    if length is None or length != len(message):
        raise BgpError(ErrorCode.MESSAGE_HEADER, HeaderError.BAD_MESSAGE_LENGTH,
                       _U16.pack(min(len(message), 0xFFFF)), reason="message length does not match its header")
    body = memoryview(message)[HEADER_LENGTH:length]
    kind = message[18]
    if kind == MessageType.UPDATE:
        return decode_update(body)
    if kind == MessageType.OPEN:
        return _decode_open(body)
    if kind == MessageType.KEEPALIVE:
        return KEEPALIVE
    if kind == MessageType.NOTIFICATION:
        return Notification(body[0], body[1], bytes(body[2:]))
    return RouteRefreshRequest(_U16.unpack_from(body)[0], body[3])


def _decode_open(body: memoryview) -> Open:
    version, my_as, hold_time, router_id, params_length = _OPEN.unpack_from(body)
    if version != VERSION:
        raise BgpError(ErrorCode.OPEN_MESSAGE, OpenError.UNSUPPORTED_VERSION, _U16.pack(VERSION),
                       reason=f"BGP version {version}")
    if hold_time in (1, 2):
        raise BgpError(ErrorCode.OPEN_MESSAGE, OpenError.UNACCEPTABLE_HOLD_TIME,
                       reason=f"hold time {hold_time} s is not 0 and below 3 s")
    if router_id == b"\x00\x00\x00\x00":
        raise BgpError(ErrorCode.OPEN_MESSAGE, OpenError.BAD_BGP_IDENTIFIER, reason="BGP identifier 0.0.0.0")
    if 10 + params_length != len(body):
        raise BgpError(ErrorCode.OPEN_MESSAGE, 0, reason="optional parameters length does not match the message")
    capabilities: list[Capability] = []
    offset = 10
    while offset < len(body):
        if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
            raise BgpError(ErrorCode.OPEN_MESSAGE, 0, reason="truncated optional parameter")
        param_type, param_length = body[offset], body[offset + 1]
        param = body[offset + 2:offset + 2 + param_length]
        offset += 2 + param_length
        if param_type != 2:
            raise BgpError(ErrorCode.OPEN_MESSAGE, OpenError.UNSUPPORTED_OPTIONAL_PARAMETER,
                           reason=f"optional parameter type {param_type}")
        at = 0
        while at < len(param):
            if at + 2 > len(param) or at + 2 + param[at + 1] > len(param):
                raise BgpError(ErrorCode.OPEN_MESSAGE, 0, reason="truncated capability")
            code, cap_length = param[at], param[at + 1]
            capabilities.append(_decode_capability(code, bytes(param[at + 2:at + 2 + cap_length])))
            at += 2 + cap_length
    return Open(my_as, hold_time, _inet_ntoa(router_id), tuple(capabilities), version)


def _decode_prefixes(data: memoryview) -> tuple[Prefix, ...]:
    prefixes = []
    offset, end = 0, len(data)
    while offset < end:
        length = data[offset]
        size = (length + 7) // 8
        if length > 32 or offset + 1 + size > end:
            raise BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.INVALID_NETWORK_FIELD,
                           reason=f"bad prefix (length {length}) at offset {offset}")
        address = int.from_bytes(data[offset + 1:offset + 1 + size], "big") << (32 - 8 * size) if size else 0
        mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
        prefixes.append(Prefix(address & mask, length))
        offset += 1 + size
    return tuple(prefixes)


def _encode_prefixes(prefixes: tuple[Prefix, ...] | list[Prefix]) -> bytes:
    out = bytearray()
    for prefix in prefixes:
        size = (prefix.length + 7) // 8
        out.append(prefix.length)
        out += _U32.pack(prefix.address)[:size]
    return bytes(out)


class _AttributeError(Exception):
    """An attribute error that RFC 7606 turns into treat-as-withdraw."""

    def __init__(self, error: BgpError):
        self.error = error


def _attribute_error(subcode: int, flags: int, type_code: int, value: bytes, reason: str) -> _AttributeError:
    # The NOTIFICATION data of attribute errors is the whole attribute (RFC 4271 6.3).
    return _AttributeError(BgpError(ErrorCode.UPDATE_MESSAGE, subcode, _encode_raw_attribute(flags, type_code, value),
                                    reason=reason))


_FIXED_LENGTHS = {AttributeType.ORIGIN: 1, AttributeType.NEXT_HOP: 4, AttributeType.MULTI_EXIT_DISC: 4,
                  AttributeType.LOCAL_PREF: 4, AttributeType.ATOMIC_AGGREGATE: 0, AttributeType.AGGREGATOR: 8}
_WELL_KNOWN_TYPES = {AttributeType.ORIGIN, AttributeType.AS_PATH, AttributeType.NEXT_HOP, AttributeType.LOCAL_PREF,
                     AttributeType.ATOMIC_AGGREGATE}
_OPTIONAL_TYPES = {AttributeType.MULTI_EXIT_DISC: OPTIONAL, AttributeType.AGGREGATOR: OPTIONAL | TRANSITIVE}


def _decode_attribute(flags: int, type_code: int, value: bytes) -> Attribute | None:
    """One attribute, or None for an unknown optional non-transitive one (silently dropped)."""
    known = type_code in _WELL_KNOWN_TYPES or type_code in _OPTIONAL_TYPES
    if not known:
        if not flags & OPTIONAL:
            raise BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                           _encode_raw_attribute(flags, type_code, value),
                           reason=f"unrecognized well-known attribute {type_code}")
        if not flags & TRANSITIVE:
            return None
        return OtherAttribute(type_code, value, flags)
    expected = _OPTIONAL_TYPES.get(type_code, WELL_KNOWN)
    if flags & (OPTIONAL | TRANSITIVE) != expected or (expected == WELL_KNOWN and flags & PARTIAL):
        raise _attribute_error(UpdateError.ATTRIBUTE_FLAGS_ERROR, flags, type_code, value,
                               f"attribute {type_code} has flags {flags:#04x}")
    fixed = _FIXED_LENGTHS.get(type_code)
    if fixed is not None and len(value) != fixed:
        raise _attribute_error(UpdateError.ATTRIBUTE_LENGTH_ERROR, flags, type_code, value,
                               f"attribute {type_code} has length {len(value)}")
    if type_code == AttributeType.ORIGIN:
        if value[0] > Origin.INCOMPLETE:
            raise _attribute_error(UpdateError.INVALID_ORIGIN, flags, type_code, value, f"origin {value[0]}")
        return OriginAttribute(_ORIGINS[value[0]], flags)
    if type_code == AttributeType.AS_PATH:
        return AsPath(_decode_as_path(flags, value), flags)
    if type_code == AttributeType.NEXT_HOP:
        if value[0] == 0 or value[0] >= 224:
            raise _attribute_error(UpdateError.INVALID_NEXT_HOP, flags, type_code, value,
                                   f"next hop {_inet_ntoa(value)}")
        return NextHop(_next_hop_text(value), flags)
    if type_code == AttributeType.MULTI_EXIT_DISC:
        return MultiExitDisc(_U32.unpack(value)[0], flags)
    if type_code == AttributeType.LOCAL_PREF:
        return LocalPref(_U32.unpack(value)[0], flags)
    return OtherAttribute(type_code, value, flags)


_ORIGINS = tuple(Origin)
_SEGMENT_TYPES = {kind.value: kind for kind in SegmentType}
_MANDATORY = ((OriginAttribute, AttributeType.ORIGIN), (AsPath, AttributeType.AS_PATH),
              (NextHop, AttributeType.NEXT_HOP))


def _decode_as_path(flags: int, value: bytes) -> tuple[tuple[SegmentType, tuple[int, ...]], ...]:
    segments = []
    offset = 0
    while offset < len(value):
        if offset + 2 > len(value):
            raise _attribute_error(UpdateError.MALFORMED_AS_PATH, flags, AttributeType.AS_PATH, value,
                                   "truncated AS_PATH segment")
        kind, count = value[offset], value[offset + 1]
        end = offset + 2 + 4 * count
        if kind not in (SegmentType.AS_SET, SegmentType.AS_SEQUENCE) or count == 0 or end > len(value):
            raise _attribute_error(UpdateError.MALFORMED_AS_PATH, flags, AttributeType.AS_PATH, value,
                                   f"bad AS_PATH segment (type {kind}, {count} ASNs)")
        segments.append((_SEGMENT_TYPES[kind], struct.unpack_from(f"!{count}I", value, offset + 2)))
        offset = end
    return tuple(segments)


def decode_update(body: memoryview | bytes) -> Update:
    body = memoryview(body)
    if len(body) < 4:
        raise BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MALFORMED_ATTRIBUTE_LIST, reason="UPDATE too short")
    withdrawn_length = _U16.unpack_from(body)[0]
    if 2 + withdrawn_length + 2 > len(body):
        raise BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MALFORMED_ATTRIBUTE_LIST,
                       reason="withdrawn routes length overruns the message")
    withdrawn = _decode_prefixes(body[2:2 + withdrawn_length])
    attributes_start = 4 + withdrawn_length
    attributes_length = _U16.unpack_from(body, 2 + withdrawn_length)[0]
    attributes_end = attributes_start + attributes_length
    if attributes_end > len(body):
        raise BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MALFORMED_ATTRIBUTE_LIST,
                       reason="path attribute length overruns the message")
    nlri = _decode_prefixes(body[attributes_end:])
    attributes: list[Attribute] = []
    error: BgpError | None = None
    seen: set[int] = set()
    offset = attributes_start
    while offset < attributes_end:
        if offset + 3 > attributes_end:
            error = BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MALFORMED_ATTRIBUTE_LIST,
                             reason="truncated attribute header")
            break
        flags, type_code = body[offset], body[offset + 1]
        header = 4 if flags & EXTENDED_LENGTH else 3
        if offset + header > attributes_end:
            error = BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MALFORMED_ATTRIBUTE_LIST,
                             reason="truncated attribute header")
            break
        length = _U16.unpack_from(body, offset + 2)[0] if header == 4 else body[offset + 2]
        if offset + header + length > attributes_end:
            error = BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.ATTRIBUTE_LENGTH_ERROR,
                             reason=f"attribute {type_code} overruns the attribute list")
            break
        value = bytes(body[offset + header:offset + header + length])
        offset += header + length
        if type_code in seen:
            continue  # RFC 7606 3(g): keep the first of a repeated attribute
        seen.add(type_code)
        try:
            attribute = _decode_attribute(flags, type_code, value)
        except _AttributeError as exc:
            error = error or exc.error
            continue
        if attribute is not None:
            attributes.append(attribute)
    if error is None and nlri:
        for kind, type_code in _MANDATORY:
            if not any(isinstance(a, kind) for a in attributes):
                error = BgpError(ErrorCode.UPDATE_MESSAGE, UpdateError.MISSING_WELL_KNOWN_ATTRIBUTE,
                                 bytes([type_code]), reason=f"missing {type_code.name}")
                break
    return Update(withdrawn, tuple(attributes), nlri, error)


def _encode_raw_attribute(flags: int, type_code: int, value: bytes) -> bytes:
    if len(value) > 255 or flags & EXTENDED_LENGTH:
        return struct.pack("!BBH", flags | EXTENDED_LENGTH, type_code, len(value)) + value
    return struct.pack("!BBB", flags, type_code, len(value)) + value


def encode_attribute(attribute: Attribute) -> bytes:
    if isinstance(attribute, OriginAttribute):
        type_code, value = AttributeType.ORIGIN, bytes([attribute.origin])
    elif isinstance(attribute, AsPath):
        type_code = AttributeType.AS_PATH
        value = b"".join(struct.pack(f"!BB{len(asns)}I", kind, len(asns), *asns) for kind, asns in attribute.segments)
    elif isinstance(attribute, NextHop):
        type_code, value = AttributeType.NEXT_HOP, _inet_aton(attribute.address)
    elif isinstance(attribute, MultiExitDisc):
        type_code, value = AttributeType.MULTI_EXIT_DISC, _U32.pack(attribute.value)
    elif isinstance(attribute, LocalPref):
        type_code, value = AttributeType.LOCAL_PREF, _U32.pack(attribute.value)
    else:
        type_code, value = attribute.type_code, attribute.value
    return _encode_raw_attribute(attribute.flags, type_code, value)


def _with_header(kind: MessageType, body: bytes) -> bytes:
    return _HEADER.pack(MARKER, HEADER_LENGTH + len(body), kind) + body


def encode(message: Message) -> bytes:
    kind = _MESSAGE_TYPES[type(message)]
    if isinstance(message, Open):
        caps = b"".join(_encode_capability(c) for c in message.capabilities)
        params = bytes([2, len(caps)]) + caps if caps else b""
        body = _OPEN.pack(message.version, message.my_as, message.hold_time, _inet_aton(message.router_id),
                          len(params)) + params
    elif isinstance(message, Update):
        withdrawn = _encode_prefixes(message.withdrawn)
        attributes = b"".join(encode_attribute(a) for a in message.attributes)
        body = (_U16.pack(len(withdrawn)) + withdrawn + _U16.pack(len(attributes)) + attributes
                + _encode_prefixes(message.nlri))
    elif isinstance(message, Notification):
        body = bytes([message.code, message.subcode]) + message.data
    elif isinstance(message, RouteRefreshRequest):
        body = struct.pack("!HBB", message.afi, 0, message.safi)
    else:
        body = b""
    if HEADER_LENGTH + len(body) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"{kind.name} of {HEADER_LENGTH + len(body)} bytes exceeds {MAX_MESSAGE_LENGTH}")
    return _with_header(kind, body)


def build_updates(attributes: tuple[Attribute, ...], nlri: list[Prefix], withdrawn: list[Prefix] = ()) -> list[bytes]:
    """UPDATE messages announcing `nlri` with `attributes` and withdrawing `withdrawn`, split so that none
    exceeds 4096 bytes."""
    messages = []
    encoded_attributes = b"".join(encode_attribute(a) for a in attributes)
    room = MAX_MESSAGE_LENGTH - HEADER_LENGTH - 4
    pending = list(withdrawn)
    while pending:
        chunk, size = [], 0
        while pending and size + 5 <= room:
            chunk.append(pending.pop())
            size += 1 + (chunk[-1].length + 7) // 8
        messages.append(encode(Update(withdrawn=tuple(chunk))))
    pending = list(nlri)
    while pending:
        chunk, size = [], len(encoded_attributes)
        while pending and size + 5 <= room:
            chunk.append(pending.pop())
            size += 1 + (chunk[-1].length + 7) // 8
        withdrawn_part = _U16.pack(0) + _U16.pack(len(encoded_attributes)) + encoded_attributes
        messages.append(_with_header(MessageType.UPDATE, withdrawn_part + _encode_prefixes(chunk)))
    return messages
