"""Helpers shared by the tests/python/test_net_*.py modules.

Everything stays on loopback (127.0.0.1, ::1, unix sockets in a tmp dir).
"""

import asyncio
import atexit
import contextlib
import functools
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from conftest import run_until  # noqa: F401  (re-exported for the network tests)

PY312 = sys.version_info >= (3, 12)
PY313 = sys.version_info >= (3, 13)

HOST = "127.0.0.1"
HOST6 = "::1"


# --------------------------------------------------------------------------
# Environment probes


@functools.lru_cache(maxsize=None)
def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((HOST6, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="::1 is not available")


@functools.lru_cache(maxsize=None)
def loopback_ifname():
    for idx, name in socket.if_nameindex():
        if name == "lo" or name.startswith("lo"):
            return name
    return None


# --------------------------------------------------------------------------
# Waiting


def run(loop, coro, timeout=10.0):
    """run_until_complete with an overall bound."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


# --------------------------------------------------------------------------
# Protocols


class RecordingProtocol(asyncio.Protocol):
    """Records every callback and checks the protocol state machine:
    connection_made, then data/eof, then connection_lost exactly once."""

    eof_result = None  # what eof_received returns

    def __init__(self, loop=None):
        self.loop = loop
        self.state = "INITIAL"
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.nbytes = 0
        self.eof = False
        self.lost = False
        self.exc = "unset"
        self.paused = 0
        self.resumed = 0
        self.made_fut = None
        self.lost_fut = None
        if loop is not None:
            self.made_fut = loop.create_future()
            self.lost_fut = loop.create_future()

    def connection_made(self, transport):
        assert self.state == "INITIAL", self.state
        self.state = "CONNECTED"
        self.transport = transport
        self.events.append("made")
        if self.made_fut is not None and not self.made_fut.done():
            self.made_fut.set_result(transport)

    def data_received(self, data):
        assert self.state == "CONNECTED", self.state
        assert isinstance(data, bytes), type(data)
        assert data, "data_received(b'')"
        self.events.append("data")
        self.data += data
        self.nbytes += len(data)

    def eof_received(self):
        assert self.state == "CONNECTED", self.state
        self.state = "EOF"
        self.events.append("eof")
        self.eof = True
        return self.eof_result

    def pause_writing(self):
        self.events.append("pause")
        self.paused += 1

    def resume_writing(self):
        self.events.append("resume")
        self.resumed += 1

    def connection_lost(self, exc):
        assert self.state in ("CONNECTED", "EOF"), self.state
        self.state = "CLOSED"
        self.events.append("lost")
        self.lost = True
        self.exc = exc
        if self.lost_fut is not None and not self.lost_fut.done():
            self.lost_fut.set_result(exc)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        # Returning None closes the transport after the echo went out.
        return None


class RecordingDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, loop=None):
        self.transport = None
        self.datagrams = []
        self.errors = []
        self.lost = False
        self.exc = "unset"
        self.made = 0

    def connection_made(self, transport):
        self.made += 1
        self.transport = transport

    def datagram_received(self, data, addr):
        assert isinstance(data, bytes)
        self.datagrams.append((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost = True
        self.exc = exc


# --------------------------------------------------------------------------
# Sockets


@contextlib.contextmanager
def listening_socket(family=socket.AF_INET, host=None, backlog=16):
    """A blocking listening TCP socket on loopback (closed on exit)."""
    if host is None:
        host = HOST if family == socket.AF_INET else HOST6
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        s.listen(backlog)
        yield s
    finally:
        s.close()


def accept(lsock, timeout=5.0):
    lsock.settimeout(timeout)
    conn, _ = lsock.accept()
    conn.settimeout(timeout)
    return conn


def closed_port(family=socket.AF_INET):
    """A loopback port that nothing listens on (bound then released)."""
    host = HOST if family == socket.AF_INET else HOST6
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def recv_exactly(sock, n, timeout=5.0):
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock, timeout=5.0):
    sock.settimeout(timeout)
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk


def set_linger_zero(sock):
    """close() on this socket then sends RST (the peer sees ECONNRESET)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_close(sock):
    set_linger_zero(sock)
    sock.close()


def small_sndbuf(sock, size=4096):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def small_rcvbuf(sock, size=4096):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def payload(n, seed=0):
    """Deterministic non-repeating-ish bytes of length n."""
    block = bytes((i * 131 + seed) & 0xFF for i in range(251))
    reps = n // len(block) + 1
    return (block * reps)[:n]


# --------------------------------------------------------------------------
# TLS: a self-signed certificate generated once per process


_CERT_DIR = None


def _generate_with_cryptography(certfile, keyfile):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _generate_with_openssl(certfile, keyfile):
    exe = shutil.which("openssl")
    if exe is None:
        raise FileNotFoundError("openssl")
    subprocess.run(
        [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", keyfile, "-out", certfile, "-days", "30",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def _cpython_test_cert():
    """CPython's own test certificate (CN=localhost), if the test package ships."""
    stdlib = sysconfig.get_paths()["stdlib"]
    for rel in ("test/certdata/keycert.pem", "test/keycert.pem"):
        p = os.path.join(stdlib, rel)
        if os.path.exists(p):
            return p, p
    return None


@functools.lru_cache(maxsize=None)
def cert_files():
    """(certfile, keyfile) of a self-signed certificate for 'localhost'."""
    global _CERT_DIR
    _CERT_DIR = tempfile.mkdtemp(prefix="cxxloop-tls-")
    atexit.register(shutil.rmtree, _CERT_DIR, True)
    certfile = os.path.join(_CERT_DIR, "cert.pem")
    keyfile = os.path.join(_CERT_DIR, "key.pem")
    for gen in (_generate_with_cryptography, _generate_with_openssl):
        try:
            gen(certfile, keyfile)
            return certfile, keyfile
        except Exception:
            continue
    found = _cpython_test_cert()
    if found is None:
        pytest.skip("no way to make a TLS certificate")
    return found


def server_ssl_context():
    certfile, keyfile = cert_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_ssl_context():
    certfile, _ = cert_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certfile)
    return ctx


def drainer(sock, into, until_len=None):
    """A predicate for run_until: reads what `sock` has (non-blocking) into the
    bytearray `into`; true once `until_len` bytes arrived, or at EOF if
    until_len is None."""
    sock.setblocking(False)

    def pull():
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    return True
                into.extend(chunk)
                if until_len is not None and len(into) >= until_len:
                    return True
        except BlockingIOError:
            return False
    return pull
