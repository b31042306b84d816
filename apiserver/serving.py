"""The API server's TLS: its serving context, the client certificate of a request, and the loopback context.

kube-apiserver asks every client for a certificate but lets the handshake succeed whatever it presents
(Go's `tls.RequestClientCert`); its x509 authenticator then judges the certificate, so a client with a
certificate from another CA gets a 401 `Status` and kubectl says "You must be logged in to the server
(Unauthorized)", instead of a TLS alert. Python's `ssl` can either not ask for a certificate
(`CERT_NONE`) or verify it during the handshake (`CERT_OPTIONAL`); asking without judging needs OpenSSL's
`SSL_CTX_set_verify` with a callback that accepts, which `request_client_certificate` sets through ctypes on
the context's `SSL_CTX` (the first field of CPython's `PySSLContext`). The authenticator
(apiserver/auth.py) then verifies the certificate against the client CA itself.
"""

from __future__ import annotations

import ctypes
import ssl

from aiohttp import web

# int verify_callback(int preverify_ok, X509_STORE_CTX *ctx)
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# Kept for the life of the process: OpenSSL calls it on every handshake.
_accept_any = _VERIFY_CALLBACK(lambda preverify_ok, store: 1)
_SSL_VERIFY_PEER = 0x01


def request_client_certificate(context: ssl.SSLContext) -> None:
    """Makes the server ask for a client certificate and accept any (or none) at the handshake."""
    # OpenSSL's symbols resolve through the _ssl extension that links it (or the interpreter, where _ssl is
    # built in).
    libssl = ctypes.CDLL(getattr(ssl._ssl, "__file__", None))  # type: ignore[attr-defined]
    try:
        set_verify = libssl.SSL_CTX_set_verify
    except AttributeError:
        raise RuntimeError("this Python's ssl module does not expose OpenSSL's SSL_CTX_set_verify: "
                           "client certificates cannot be requested") from None
    set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    set_verify.restype = None
    ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    set_verify(ssl_ctx, _SSL_VERIFY_PEER, _accept_any)


def server_context(cert_file: str, key_file: str, *, request_client_certs: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if request_client_certs:
        request_client_certificate(context)
    return context


def peer_certificate(request: web.Request) -> bytes | None:
    """The client certificate (DER) the request's connection presented, unverified; None without one."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


def loopback_context(cert_file: str) -> ssl.SSLContext:
    """What the in-process controllers trust: exactly the server's own certificate, whoever signed it and
    whatever names it carries (they connect to an address it may not name)."""
    context = ssl.create_default_context(cafile=cert_file)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    return context
