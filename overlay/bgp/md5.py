"""TCP MD5 signatures for BGP sessions (RFC 2385), as BIRD's `password` and Calico's BGP password.

The kernel signs every segment to a peer and drops every unsigned or wrongly signed segment from it, before
the speaker sees a byte: whoever binds a node's address without the password cannot even complete a
handshake. The key is set per peer address, on the listening socket (accepted connections inherit it) and
on each outgoing socket before it connects. Python's socket module has no TCP_MD5SIG: the option and
`struct tcp_md5sig` are Linux's (include/uapi/linux/tcp.h).
"""

from __future__ import annotations

import socket
import struct

TCP_MD5SIG = getattr(socket, "TCP_MD5SIG", 14)
MAX_KEY_BYTES = 80  # TCP_MD5SIG_MAXKEYLEN
_SOCKADDR_STORAGE = 128
# struct tcp_md5sig: sockaddr_storage tcpm_addr; u8 tcpm_flags; u8 tcpm_prefixlen; u16 tcpm_keylen;
# int tcpm_ifindex; u8 tcpm_key[80].
_TCP_MD5SIG = struct.Struct(f"={_SOCKADDR_STORAGE}sBBHi{MAX_KEY_BYTES}s")


def md5sig(peer: str, key: bytes) -> bytes:
    """The option value that makes `key` the password for segments with `peer` (an empty key removes it)."""
    if len(key) > MAX_KEY_BYTES:
        raise ValueError(f"a TCP MD5 password is at most {MAX_KEY_BYTES} bytes")
    sockaddr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + socket.inet_aton(peer)
    return _TCP_MD5SIG.pack(sockaddr.ljust(_SOCKADDR_STORAGE, b"\0"), 0, 0, len(key), 0, key)


def set_password(sock: socket.socket, peer: str, key: bytes) -> None:
    """Raises OSError when the kernel has no TCP MD5 support (CONFIG_TCP_MD5SIG)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(peer, key))
