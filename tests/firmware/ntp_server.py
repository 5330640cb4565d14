"""An NTP server on loopback for the real-MicroPython lane: the firmware sets its clock from it."""

from __future__ import annotations

import socket
import struct
import threading
import time


class NtpServer:
    """An NTP server on loopback (UDP) answering with this computer's clock; `drop` requests are
    ignored first (a venue blocking UDP 123 for a while)."""

    NTP_DELTA = 2208988800  # 1900 -> 1970

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.drop = 0
        self.requests = 0
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True, name="ntp").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.requests += 1
            if self.drop > 0:
                self.drop -= 1
                continue
            now = time.time() + self.NTP_DELTA
            seconds, fraction = int(now), int((now % 1) * 2**32)
            reply = bytearray(48)
            reply[0] = 0x24  # version 4, server
            reply[1] = 2  # stratum
            struct.pack_into("!II", reply, 32, seconds, fraction)  # receive
            struct.pack_into("!II", reply, 40, seconds, fraction)  # transmit
            self.sock.sendto(bytes(reply), peer)
            self.answered += 1

    def close(self) -> None:
        self.sock.close()
