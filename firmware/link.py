# The MQTT link over umqtt.simple: connect with a persistent session, last will, re-subscribe,
# our own keepalive pings, socket timeouts and capped exponential backoff. Any error means
# "link down": the socket is dropped and a reconnect is scheduled. Nothing here blocks for longer
# than mqtt.timeout_s at a time, well below the watchdog.
import umqtt.simple as simple
from micropython import const

_FIRST_BACKOFF_MS = const(1000)
_MAX_READS_PER_POLL = const(8)


class _TimedSockets:
    """Stands in for umqtt's socket module: every socket it makes has a timeout from birth,
    so connect() and the CONNACK read cannot block forever (umqtt sets none)."""

    def __init__(self, module, timeout_s):
        self._module = module
        self.timeout_s = timeout_s

    def socket(self, *args):
        sock = self._module.socket(*args)
        sock.settimeout(self.timeout_s)
        return sock

    def getaddrinfo(self, *args):
        return self._module.getaddrinfo(*args)


class _BoundedSocket:
    """umqtt switches its socket back to fully blocking after every read; this keeps the
    timeout instead, and notes when bytes last arrived (our keepalive check)."""

    def __init__(self, sock, timeout_s, board):
        self._sock = sock
        self._timeout_s = timeout_s
        self._board = board
        self.last_rx = board.ticks_ms()

    def setblocking(self, flag):
        if not flag:
            self._sock.setblocking(False)
            return
        try:
            self._sock.settimeout(self._timeout_s)
        except (AttributeError, OSError):  # an SSL socket without settimeout
            self._sock.setblocking(True)

    def settimeout(self, value):
        self._sock.settimeout(value)

    def read(self, n):
        data = self._sock.read(n)
        if data:
            self.last_rx = self._board.ticks_ms()
        return data

    def write(self, *args):
        return self._sock.write(*args)

    def close(self):
        self._sock.close()


class Link:
    def __init__(self, board, cfg, on_message, event, topic, last_will):
        self._board = board
        self._cfg = cfg
        self._mqtt = cfg["mqtt"]
        self._on_message = on_message
        self._event = event
        self._topic = topic  # the coinpulse topic we subscribe to
        self._last_will = last_will  # () -> (topic, retained offline payload)
        self._timeout_s = self._mqtt["timeout_s"]
        self._keepalive_ms = self._mqtt["keepalive"] * 1000
        self._backoff_max_ms = self._mqtt["backoff_max_s"] * 1000
        self._backoff_ms = _FIRST_BACKOFF_MS
        self._next_attempt = board.ticks_ms()  # first attempt at once
        self._client = None
        self._readable = None  # board.readable(socket): one per connection, reused by wait()
        self._last_ping = 0
        self._delivered = False
        self._timeout_arg = True  # newer umqtt takes connect(..., timeout); 1.3.x does not
        if not isinstance(simple.socket, _TimedSockets):
            simple.socket = _TimedSockets(simple.socket, self._timeout_s)

    @property
    def up(self):
        return self._client is not None

    # --- the loop calls these ------------------------------------------------------------
    def poll(self, now, may_block):
        """Keep the link alive; returns True right after a (re)connect.

        may_block=False while a pulse train runs: no connect attempt then, only cheap reads.
        """
        if self._client is None:
            if not may_block or self._board.ticks_diff(now, self._next_attempt) < 0:
                return False
            if not self._board.wifi_ready(self._cfg["wifi"], now):
                return False
            return self._connect(now)
        try:
            self._keep_alive(now)
            for _ in range(_MAX_READS_PER_POLL):
                self._delivered = False
                # umqtt 1.3.x answers None both for "nothing there" and after a message
                if self._client.check_msg() is None and not self._delivered:
                    break
        except Exception as e:  # OSError, or umqtt's asserts on a garbled stream
            self._drop(now, e)
        return False

    def wait(self, ms):
        """Up to ms (bounded, at most the loop's idle period), returning as soon as the broker
        has sent something. False, having waited for nothing, while the link is down."""
        if self._readable is None:
            return False
        # A failed socket reads as readable: the next poll() meets the error and drops the link.
        self._board.wait_readable(self._readable, ms)
        return True

    def publish(self, topic, payload, retain):
        """QoS 1 publish, waiting for the PUBACK; False (and the link down) on any failure."""
        if self._client is None:
            return False
        try:
            self._client.publish(topic, payload, retain, 1)
            return True
        except Exception as e:
            self._drop(self._board.ticks_ms(), e)
            return False

    def close(self, status_topic, offline_payload):
        """Say goodbye properly (a clean disconnect suppresses the last will)."""
        if self._client is None:
            return
        try:
            self._client.publish(status_topic, offline_payload, True, 1)
            self._client.disconnect()
        except Exception:
            pass
        self._client = None

    # --- internals -----------------------------------------------------------------------
    def _connect(self, now):
        mqtt = self._mqtt
        kwargs = {}
        if mqtt["tls"]:
            kwargs["ssl"] = self._board.tls_context(mqtt["ca_file"], mqtt["host"])
        client = simple.MQTTClient(
            self._cfg["machine_id"], mqtt["host"], mqtt["port"], mqtt["user"],
            mqtt["password"], mqtt["keepalive"], **kwargs
        )
        client.set_callback(self._deliver)
        will_topic, will_payload = self._last_will()
        client.set_last_will(will_topic, will_payload, True, 1)
        try:
            self._open_session(client)
        except Exception as e:
            _close_quietly(client)
            self._schedule_retry(now, e)
            return False
        sock = client.sock
        client.sock = _BoundedSocket(sock, self._timeout_s, self._board)
        self._client = client
        self._last_ping = self._board.ticks_ms()
        self._event("connected", {"host": mqtt["host"], "port": mqtt["port"]})
        try:
            self._readable = self._board.readable(sock)  # registered once, used by every wait
            # After every connect, in case the broker lost the session; queued coinpulses may
            # arrive (and be journaled) before the SUBACK.
            client.subscribe(self._topic, 1)
        except Exception as e:
            self._drop(now, e)
            return False
        self._backoff_ms = _FIRST_BACKOFF_MS
        return True

    def _open_session(self, client):
        if self._timeout_arg:
            try:
                return client.connect(False, self._timeout_s)
            except TypeError:
                self._timeout_arg = False  # umqtt 1.3.x: connect(clean_session) only
                _close_quietly(client)
        return client.connect(False)

    def _deliver(self, topic, payload):
        self._delivered = True
        self._on_message(topic, payload)

    def _keep_alive(self, now):
        client = self._client
        silent_ms = self._board.ticks_diff(now, client.sock.last_rx)
        if silent_ms > self._keepalive_ms + self._timeout_s * 1000:
            raise OSError("no answer to keepalive pings")
        if self._board.ticks_diff(now, self._last_ping) >= self._keepalive_ms // 2:
            client.ping()  # umqtt never pings on its own
            self._last_ping = now

    def _drop(self, now, error):
        _close_quietly(self._client)
        self._client = None
        self._readable = None
        self._event("disconnected", {"reason": _describe(error)})
        self._schedule_retry(now, None)

    def _schedule_retry(self, now, error):
        delay = self._backoff_ms + self._board.random_bits() % (self._backoff_ms // 4 + 1)
        self._next_attempt = self._board.ticks_add(now, delay)
        self._backoff_ms = min(self._backoff_ms * 2, self._backoff_max_ms)
        if error is not None:
            self._event("connect_failed", {"reason": _describe(error), "retry_ms": delay})


def _close_quietly(client):
    try:
        if client.sock is not None:
            client.sock.close()
    except Exception:
        pass


def _describe(error):
    name = type(error).__name__
    text = str(error)
    return name + ": " + text if text else name
