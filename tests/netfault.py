"""A loopback TCP proxy in front of a real broker that loses chosen MQTT packets, as a flaky
network does: a PUBACK that never comes back, a PUBLISH that never arrives. The bytes that pass
are the real client's and the real broker's; only whole packets are dropped, so both ends keep a
well-formed stream.

    proxy = MqttProxy(broker.host, broker.port)
    proxy.drop = lambda packet: packet.kind == PUBACK and not packet.to_broker
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

PUBLISH, PUBACK = 3, 4


@dataclass(frozen=True)
class Packet:
    connection: int  # 1 for the first connection through the proxy, 2 for the next, ...
    to_broker: bool
    kind: int  # MQTT control packet type (3 PUBLISH, 4 PUBACK, ...)
    data: bytes


def _frame(buffer: bytearray) -> bytes | None:
    """Take one whole MQTT packet off the front of `buffer`, or None if it is not all here."""
    length, multiplier, index = 0, 1, 1
    while True:
        if index >= len(buffer):
            return None
        byte = buffer[index]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            break
    end = index + length
    if len(buffer) < end:
        return None
    packet = bytes(buffer[:end])
    del buffer[:end]
    return packet


class MqttProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.drop: Callable[[Packet], bool] = lambda packet: False
        self.seen: list[Packet] = []  # every packet that passed or was dropped, in order
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._connections = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections += 1
                number = self._connections
                self._sockets += [client, upstream]
            for source, sink, to_broker in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(number, source, sink, to_broker), daemon=True
                ).start()

    def _pump(self, number: int, source, sink, to_broker: bool) -> None:
        buffer = bytearray()
        try:
            while chunk := source.recv(65536):
                buffer += chunk
                while (data := _frame(buffer)) is not None:
                    packet = Packet(number, to_broker, data[0] >> 4, data)
                    dropped = self.drop(packet)
                    with self._changed:
                        self.seen.append(packet)
                        self._changed.notify_all()
                    if not dropped:
                        sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def wait_for(self, condition: Callable[[list[Packet]], bool], timeout: float = 10.0) -> None:
        """Until `condition(self.seen)` holds (a packet went by), else TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.seen), timeout):
                raise TimeoutError("the packet never went through the proxy")

    def cut(self) -> None:
        """Break every connection at once, as a dead link does."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._server.close()
        self.cut()
