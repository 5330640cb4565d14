# A scripted MQTT broker behind a fake `usocket`, for running link.py with the genuine
# umqtt.simple on the MicroPython VM (no sockets there) and on CPython. Installed as usocket.py.
import struct

ETIMEDOUT = 110


class Broker:
    """Answers CONNECT, SUBSCRIBE, PUBLISH (QoS 1) and PINGREQ; records what the client sent."""

    def __init__(self):
        self.packets = []  # [type byte, body bytes] from the client
        self.inbound = bytearray()  # bytes waiting for the client to read
        self.silent = False  # a broker that stopped answering anything
        self.on_puback = None  # called with the pid when the client acks our PUBLISH
        self.connects = 0
        self.sockets = []

    def deliver(self, topic, payload, pid):
        body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", pid) + payload
        self.inbound += bytes([0x32]) + _length(len(body)) + body

    def handle(self, kind, body):
        self.packets.append([kind, bytes(body)])
        if self.silent:
            return
        op = kind & 0xF0
        if op == 0x10:
            self.connects += 1
            self.inbound += b"\x20\x02\x00\x00"
        elif op == 0x80:
            self.inbound += b"\x90\x03" + bytes(body[0:2]) + b"\x01"
        elif op == 0x30 and kind & 0x06:
            topic_len = body[0] << 8 | body[1]
            pid = body[2 + topic_len:4 + topic_len]
            self.inbound += b"\x40\x02" + bytes(pid)
        elif op == 0xC0:
            self.inbound += b"\xd0\x00"
        elif op == 0x40 and self.on_puback is not None:
            self.on_puback(body[0] << 8 | body[1])

    def of(self, op):
        return [p for p in self.packets if p[0] & 0xF0 == op]


def _length(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


BROKER = Broker()


class socket:
    def __init__(self, *args):
        self.timeout = None
        self.blocking = True
        self.closed = False
        self._out = bytearray()
        self.broken = False
        self.waits = 0
        BROKER.inbound = bytearray()  # a new connection starts a clean stream
        BROKER.sockets.append(self)

    def connect(self, address):
        self.address = address

    def settimeout(self, value):
        self.timeout = value
        self.blocking = value != 0

    def setblocking(self, flag):
        self.blocking = flag
        self.timeout = None if flag else 0

    def readable(self):
        """What select.poll would say: bytes waiting, or the connection closed under us."""
        self.waits += 1
        return self.broken or (not self.closed and bool(BROKER.inbound))

    def read(self, n):
        if self.broken:
            return b""  # the broker closed the connection
        data = BROKER.inbound
        if not data:
            if not self.blocking:
                return None
            raise OSError(ETIMEDOUT)
        if len(data) < n:
            raise OSError(ETIMEDOUT)
        out = bytes(data[:n])
        BROKER.inbound = data[n:]
        return out

    def write(self, buf, length=None):
        if self.broken:
            raise OSError(104)
        if isinstance(buf, str):
            buf = buf.encode()
        chunk = bytes(buf) if length is None else bytes(buf[:length])
        self._out += chunk
        self._parse()
        return len(chunk)

    def _parse(self):
        while len(self._out) >= 2:
            size, shift, i = 0, 0, 1
            while True:
                if i >= len(self._out):
                    return
                byte = self._out[i]
                size |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            if len(self._out) < i + size:
                return
            kind = self._out[0]
            body = self._out[i:i + size]
            self._out = self._out[i + size:]
            BROKER.handle(kind, body)

    def close(self):
        self.closed = True


def getaddrinfo(host, port, *args):
    return [(2, 1, 0, "", (host, port))]
