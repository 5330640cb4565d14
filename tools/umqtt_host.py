"""Running the unchanged firmware on CPython: the genuine umqtt.simple and MicroPython's names.

umqtt.simple is the MQTT client frozen into stock ESP32 MicroPython. We run the same code on the
host: PyPI's `micropython-umqtt.simple` sdist (micropython-lib's file, no setup.py, so pip cannot
install it) is fetched with pip into a cache on first use, checked against a pinned SHA-256 and
loaded with `usocket`/`ustruct`/`ubinascii`/`ussl` mapped onto CPython. Nothing third-party is
kept in this repository.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import importlib.util
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

from tools.errors import UserError

UMQTT_PACKAGE = "micropython-umqtt.simple"
UMQTT_VERSION = "1.3.4"
UMQTT_SHA256 = "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"


def cache_dir() -> Path:
    base = os.environ.get("ARCADE_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return (root if os.environ.get("ARCADE_CACHE_DIR") else root / "arcade-stem").resolve()


def umqtt_simple_path(cache: Path | None = None) -> Path:
    """The verified umqtt/simple.py, downloaded with pip the first time."""
    target = (cache or cache_dir()) / f"umqtt-simple-{UMQTT_VERSION}" / "simple.py"
    if target.exists() and _sha256(target) == UMQTT_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        source = _pip_unpack(Path(tmp))
        if _sha256(source) != UMQTT_SHA256:
            raise UserError(f"{UMQTT_PACKAGE} {UMQTT_VERSION}: umqtt/simple.py has an unexpected "
                            "SHA-256; refusing to run it")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".tmp")
        shutil.copyfile(source, partial)
        partial.replace(target)
    return target


def _pip_unpack(tmp: Path) -> Path:
    # pip downloads and unpacks the sdist, then gives up ("no setup.py"); --no-clean keeps the
    # unpacked tree in TMPDIR, which is all we need.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-clean", "--disable-pip-version-check", "--quiet", "-d", str(tmp / "dl"),
               f"{UMQTT_PACKAGE}=={UMQTT_VERSION}"]
    env = dict(os.environ, TMPDIR=str(tmp))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    found = sorted(tmp.glob("**/umqtt/simple.py"))
    if not found:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not fetch {UMQTT_PACKAGE} {UMQTT_VERSION} with pip: {detail}")
    return found[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- MicroPython names on CPython ----------------------------------------------------------------
def install_micropython_shims() -> None:
    """`micropython.const` and friends, so firmware modules import unchanged."""
    if "micropython" not in sys.modules:
        module = types.ModuleType("micropython")
        module.const = lambda value: value  # type: ignore[attr-defined]
        sys.modules["micropython"] = module


class HostSocket:
    """A CPython socket with MicroPython's stream API (read/write, None when nothing is there)."""

    def __init__(self, *args: object, sock: socket.socket | None = None) -> None:
        self._sock = sock if sock is not None else socket.socket(*args)  # type: ignore[arg-type]
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connect(self, address: tuple) -> None:
        self._sock.connect(address)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def read(self, size: int) -> bytes | None:
        """Like MicroPython: a blocking read returns `size` bytes unless the peer closed."""
        chunks, wanted = [], size
        while wanted > 0:
            try:
                chunk = self._sock.recv(wanted)
            except (BlockingIOError, ssl.SSLWantReadError):
                if not chunks:
                    return None  # non-blocking and nothing waiting
                raise OSError(errno.EAGAIN, "partial read") from None
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "read timed out") from None
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
            if self._sock.gettimeout() == 0.0:
                break
        return b"".join(chunks)

    def write(self, data: bytes | bytearray | str, length: int | None = None) -> int:
        if isinstance(data, str):
            data = data.encode()
        view = memoryview(data)[: len(data) if length is None else length]
        self._sock.sendall(view)
        return len(view)

    def close(self) -> None:
        self._sock.close()

    @property
    def raw(self) -> socket.socket:
        return self._sock


class _TlsState:
    context: ssl.SSLContext | None = None
    server_hostname: str | None = None


def use_tls(context: ssl.SSLContext, server_hostname: str) -> None:
    """umqtt 1.3.4 calls ussl.wrap_socket(sock) with no context: it uses this one."""
    _TlsState.context = context
    _TlsState.server_hostname = server_hostname


def _wrap_socket(sock: HostSocket, **params: object) -> HostSocket:
    """TLS on the same HostSocket (the firmware sets its timeouts on the socket it made, as the
    ESP32 needs: see firmware/link.py)."""
    context = _TlsState.context or ssl.create_default_context()
    sock._sock = context.wrap_socket(sock.raw, server_hostname=_TlsState.server_hostname)
    return sock


def _micropython_modules() -> dict[str, types.ModuleType]:
    usocket = types.ModuleType("usocket")
    usocket.socket = HostSocket  # type: ignore[attr-defined]
    usocket.getaddrinfo = socket.getaddrinfo  # type: ignore[attr-defined]
    ussl = types.ModuleType("ussl")
    ussl.wrap_socket = _wrap_socket  # type: ignore[attr-defined]
    return {"usocket": usocket, "ustruct": struct, "ubinascii": binascii, "ussl": ussl}


def _accept_timeout(client: type) -> None:
    """1.3.4's connect() takes no timeout (1.6+ does, and the firmware passes it); the firmware
    gives every socket its timeout when it is made, so the argument is only accepted here."""
    connect = client.connect

    def connect_with_timeout(self, clean_session: bool = True, timeout: float | None = None):
        return connect(self, clean_session)

    client.connect = connect_with_timeout


def install_umqtt(cache: Path | None = None) -> types.ModuleType:
    """Import the genuine umqtt.simple as `umqtt.simple` for the firmware's `link.py`."""
    install_micropython_shims()
    if "umqtt.simple" in sys.modules:
        return sys.modules["umqtt.simple"]
    path = umqtt_simple_path(cache)
    aliases = _micropython_modules()
    saved = {name: sys.modules.get(name) for name in aliases}
    sys.modules.update(aliases)  # only while simple.py runs its imports
    try:
        spec = importlib.util.spec_from_file_location("umqtt.simple", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    # simple.py imports ussl only inside connect() when TLS is on, long after the above.
    sys.modules.setdefault("ussl", aliases["ussl"])
    _accept_timeout(module.MQTTClient)
    package = types.ModuleType("umqtt")
    package.__path__ = []  # type: ignore[attr-defined]
    package.simple = module  # type: ignore[attr-defined]
    sys.modules["umqtt"] = package
    sys.modules["umqtt.simple"] = module
    return module
