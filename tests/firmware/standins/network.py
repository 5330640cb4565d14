# Stand-in for the ESP32's `network` on the MicroPython unix port (see machine.py): a station
# interface that associates at once. Sockets, DNS and TLS are the unix port's real ones.
STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._connected = False

    def active(self, flag=None):
        if flag is None:
            return self._active
        self._active = bool(flag)

    def connect(self, ssid=None, key=None):
        if not self._active:
            raise OSError("WiFi Internal Error")
        self._connected = True

    def disconnect(self):
        self._connected = False

    def isconnected(self):
        return self._connected

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def status(self, param=None):
        if param == "rssi":
            return -55
        return 1010 if self._connected else 1000
