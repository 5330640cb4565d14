# The MQTT link over umqtt.simple: connect with a persistent session, last will, subscribe when
# the broker has no session for us, our own keepalive pings, socket timeouts, capped exponential
# backoff, and the clock (NTP) that TLS needs. Any error means "link down": the socket is dropped
# and a reconnect is scheduled.
#
# Every pass of the loop runs at most one step that may block, each bounded: a DNS lookup, an
# NTP query (1 s), a connect (TCP, TLS, CONNACK: each read at most mqtt.timeout_s), a
# subscribe, or reads of what has already arrived. So no pass comes near the watchdog.
import umqtt.simple as simple
from micropython import const

_FIRST_BACKOFF_MS = const(1000)
_MAX_READS_PER_POLL = const(8)
_NTP_TIMEOUT_MS = const(1000)
_NTP_FIRST_RETRY_MS = const(2000)
_NTP_MAX_RETRY_MS = const(60000)
_NTP_RESYNC_MS = const(86400000)  # a set clock is refreshed daily (and retried hourly)
_NTP_RETRY_SET_MS = const(3600000)
_IPPROTO_TCP = const(6)  # the same numbers in lwIP (ESP32) and Linux; the unix port's socket
_TCP_NODELAY = const(1)  # module has no names for them


class _Sockets:
    """Stands in for umqtt's socket module: every socket it makes has a timeout from birth
    (umqtt 1.7 sets its own only after creating it), the last one is kept (TLS wraps it, and
    the timeout must be set on it, see _BoundedSocket), and getaddrinfo answers with the address
    the link resolved in a pass of its own."""

    def __init__(self, module, timeout_s):
        self._module = module
        self.timeout_s = timeout_s
        self.raw = None
        self.address = None

    def socket(self, *args):
        sock = self._module.socket(*args)
        sock.settimeout(self.timeout_s)
        try:
            # umqtt writes a publish in 4-5 small pieces: with Nagle each waits for the broker's
            # delayed ACK of the one before (~40 ms per publish, per PUBACK round trip).
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self.raw = sock
        return sock

    def getaddrinfo(self, host, port, *args):
        if self.address is not None:
            return [(2, 1, 0, "", self.address)]
        return self._module.getaddrinfo(host, port, *args)


class _BoundedSocket:
    """umqtt switches its socket to blocking after every read. On an ESP32 a blocking socket
    waits forever (setblocking(True) drops the timeout), and a TLS socket has no settimeout: its
    setblocking(True) reaches the raw socket with the same effect. So blocking here means the
    raw socket's timeout again. Also notes when bytes last arrived (our keepalive check)."""

    def __init__(self, sock, raw, timeout_s, board):
        self._sock = sock
        self._raw = raw
        self._timeout_s = timeout_s
        self._board = board
        self.last_rx = board.ticks_ms()

    def setblocking(self, flag):
        if flag:
            self._raw.settimeout(self._timeout_s)
        else:
            self._raw.setblocking(False)

    def settimeout(self, value):
        self._raw.settimeout(self._timeout_s if value is None else value)

    def read(self, n):
        data = self._sock.read(n)
        if data:
            self.last_rx = self._board.ticks_ms()
        return data

    def write(self, *args):
        return self._sock.write(*args)

    def close(self):
        self._sock.close()
        if self._raw is not self._sock:
            self._raw.close()


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
        now = board.ticks_ms()
        self._next_attempt = now  # first attempt at once
        self._client = None
        self._pending = None  # connected, not yet subscribed (the broker had no session)
        self._readable = None  # board.readable(socket): one per connection, reused by wait()
        self._last_ping = 0
        self._delivered = False
        self._ctx = None  # the TLS context, built once (it holds the parsed CA)
        self._address = None  # the broker's address, resolved in a pass of its own
        self.problem = None  # (code, detail) for the status, e.g. a CA file that is missing
        self._ntp_host, self._ntp_port = _host_port(cfg["ntp_server"], 123)
        self._ntp_address = None
        self._ntp_at = now
        self._ntp_retry_ms = _NTP_FIRST_RETRY_MS
        self._sockets = simple.socket
        if not isinstance(self._sockets, _Sockets):
            self._sockets = simple.socket = _Sockets(simple.socket, self._timeout_s)

    @property
    def up(self):
        return self._client is not None

    # --- the loop calls these ------------------------------------------------------------
    def poll(self, now, may_block):
        """Keep the link alive; returns True right after a (re)connect.

        may_block=False inside a pulse train: no connect, DNS or NTP then, only cheap reads.
        """
        board = self._board
        if self._client is None:
            if not may_block:
                return False
            if not board.wifi_ready(self._cfg["wifi"], now):
                self._defer(now)
                return False
            if self._pending is not None:
                return self._subscribe(now)
            if self._clock_step(now):
                return False
            if board.ticks_diff(now, self._next_attempt) < 0:
                return False
            return self._connect_step(now)
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
        if may_block:
            self._clock_step(now)
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
    def _defer(self, now):
        """Nothing can be tried now: keep what is due due. A deadline left in the past would
        look like one in the future after 2**29 ms (6.2 days): ticks wrap on the ESP32."""
        board = self._board
        if board.ticks_diff(now, self._next_attempt) > 0:
            self._next_attempt = now
        if board.ticks_diff(now, self._ntp_at) > 0:
            self._ntp_at = now

    def _clock_step(self, now):
        """One step of setting the clock by NTP when it is due (DNS, then the query): True when
        it ran, or when TLS must wait for it (certificate dates are checked against the clock)."""
        board = self._board
        if board.ticks_diff(now, self._ntp_at) >= 0:
            try:
                if self._ntp_address is None:
                    self._ntp_address = board.resolve(self._ntp_host, self._ntp_port)
                    return True
                board.set_clock(self._ntp_address, _NTP_TIMEOUT_MS)
                self._ntp_at = board.ticks_add(now, _NTP_RESYNC_MS)
                self._ntp_retry_ms = _NTP_FIRST_RETRY_MS
                self._event("clock_set", {"server": self._ntp_host})
            except Exception as e:
                self._ntp_address = None
                valid = board.clock_valid()
                delay = _NTP_RETRY_SET_MS if valid else self._ntp_retry_ms
                self._ntp_at = board.ticks_add(now, delay)
                self._ntp_retry_ms = min(self._ntp_retry_ms * 2, _NTP_MAX_RETRY_MS)
                self._event("ntp_failed", {"error": _describe(e), "retry_ms": delay})
            return True
        return bool(self._mqtt["tls"] and not board.clock_valid())

    def _connect_step(self, now):
        """DNS in one pass, the connect (TCP, TLS, CONNACK) in the next."""
        mqtt = self._mqtt
        if self._address is None:
            try:
                self._address = self._board.resolve(mqtt["host"], mqtt["port"])
            except Exception as e:
                self._schedule_retry(now, e)
            return False
        kwargs = {}
        if mqtt["tls"]:
            ctx = self._tls_context()
            if ctx is None:
                self._schedule_retry(now, None)
                return False
            kwargs["ssl"] = ctx
        client = simple.MQTTClient(
            self._cfg["machine_id"], mqtt["host"], mqtt["port"], mqtt["user"],
            mqtt["password"], mqtt["keepalive"], **kwargs
        )
        client.set_callback(self._deliver)
        will_topic, will_payload = self._last_will()
        client.set_last_will(will_topic, will_payload, True, 1)
        self._sockets.address = self._address
        try:
            session = client.connect(False, self._timeout_s)
        except Exception as e:
            _close_quietly(client)
            self._address = None  # look the name up again: the broker may have moved
            self._schedule_retry(now, e)
            return False
        finally:
            self._sockets.address = None
        client.sock = _BoundedSocket(client.sock, self._sockets.raw, self._timeout_s,
                                     self._board)
        if not session:
            # The broker lost (or never had) our session: subscribe, in a pass of its own.
            self._pending = client
            return False
        return self._up(client, True)

    def _subscribe(self, now):
        client = self._pending
        self._pending = None
        try:
            client.subscribe(self._topic, 1)
        except Exception as e:
            _close_quietly(client)
            self._event("disconnected", {"reason": _describe(e)})
            self._schedule_retry(now, None)
            return False
        return self._up(client, False)

    def _up(self, client, session):
        """Connected and subscribed: coinpulses published from now on reach us."""
        mqtt = self._mqtt
        self._event("connected", {"host": mqtt["host"], "port": mqtt["port"], "session": session})
        self._client = client
        self._last_ping = self._board.ticks_ms()
        try:
            self._readable = self._board.readable(client.sock._sock)  # one per connection
        except Exception as e:
            self._drop(self._last_ping, e)
            return False
        self._backoff_ms = _FIRST_BACKOFF_MS
        return True

    def _tls_context(self):
        if self._ctx is None:
            ca_file = self._mqtt["ca_file"]
            try:
                self._ctx = self._board.tls_context(ca_file, self._mqtt["host"])
            except Exception as e:  # missing or unreadable: say so, retry, never reset over it
                self.problem = ("tls_ca_missing", "%s: %s" % (ca_file, _describe(e)))
                self._event("tls_ca_missing", {"ca_file": ca_file, "error": _describe(e)})
                return None
            self.problem = None
        return self._ctx

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


def _host_port(text, default_port):
    host, _, port = text.rpartition(":")
    if host and port.isdigit():
        return host, int(port)
    return text, default_port


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
