"""TLS for cxxloop: asyncio's SSLProtocol with its per-record path in C.

SSLProtocol derives from _core.TLSProtocolBase (src/bind/bind_tls.cpp) and from the
running interpreter's asyncio.sslproto.SSLProtocol. The C base holds the state read
on every record and overrides only the per-record methods (reading the socket
transport's data into the incoming BIO, decrypting to the app protocol, encrypting
the app's writes, sending records, the water-mark checks). The handshake, shutdown,
state changes, EOF handling and error reports are the stdlib's own methods, so they
behave as the running Python's (3.11 and 3.13 differ slightly there). Certificates,
contexts, verification, SNI, ALPN and sessions are the ssl module's: records go
through its SSLObject and MemoryBIO.
"""

import _ssl
import ssl
from asyncio import sslproto

from . import _core

__all__ = ("SSLProtocol",)

_core._tls_setup(sslproto.SSLProtocolState, sslproto.SSLAgainErrors, ssl.SSLObject,
                 sslproto.SSLProtocol, _ssl._SSLSocket, ssl.MemoryBIO)


class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """The app's transport; write() and writelines() are C (set just below), and
    read _ssl_protocol from its slot."""

    __slots__ = ("_ssl_protocol",)


_core._tls_install_transport(_SSLProtocolTransport)


class SSLProtocol(_core.TLSProtocolBase, sslproto.SSLProtocol):
    """asyncio's SSLProtocol, whose per-record methods come from the C base."""

    def _get_app_transport(self):
        # As the stdlib's, with this module's transport class.
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport
