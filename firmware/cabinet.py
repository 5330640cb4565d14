# The cabinet's logic, with no network in it: coinpulses in, relay pulses, inputs, and the
# messages it owes the cloud (status, ack, gameover). Hardware comes in as `board`.
import contract
from gameover import Debounced, GameOverReporter
from journal import Journal
from pulser import Pulser


class Cabinet:
    def __init__(self, board, cfg):
        self._board = board
        self.machine_id = cfg["machine_id"]
        prefix = cfg["mqtt"]["topic_prefix"]
        self.coin_topic = contract.topic(prefix, self.machine_id, "coinpulse").encode()
        self.status_topic = contract.topic(prefix, self.machine_id, "status").encode()
        self._ack_topic = contract.topic(prefix, self.machine_id, "ack").encode()
        self._gameover_topic = contract.topic(prefix, self.machine_id, "gameover").encode()
        self._max_credits = cfg["max_credits_per_message"]
        self._per_credit = cfg["relay"]["pulses_per_credit"]
        self.journal = Journal(board.STATE_DIR)
        self._pulser = Pulser(board, self.journal, cfg["relay"], self._on_pulse)
        self._gameover = None
        if "gameover" in cfg:
            self._gameover = GameOverReporter(board, board.gameover_level, cfg["gameover"])
        self._lockout = None
        if "lockout" in cfg:
            lock = cfg["lockout"]
            self._lockout = Debounced(board, board.lockout_level, lock["active_low"],
                                      lock["debounce_ms"])
        self._status_every_ms = cfg["status_interval_s"] * 1000
        self._status_sent = None  # (pending, locked) last published; None forces a status
        self._status_at = 0
        self._uptime_ms = 0
        self._last_tick = board.ticks_ms()

    # --- start-up --------------------------------------------------------------------------
    def resume(self):
        """Load the journal; whatever it still owes is pulsed and acked as if just received."""
        try:
            owed = self.journal.load()
        except Exception as e:  # unreadable: keep it for a human, never crash-loop on it
            kept = self.journal.set_aside()
            self._event("journal_unreadable", error=repr(e), kept_as=kept)
            owed = 0
        if self.journal.recent_problem is not None:  # credits kept; only the id list set aside
            self._event("recent_ids_unreadable", error=self.journal.recent_problem,
                        kept_as=self.journal.path("recent.dat.bad"))
        if owed:
            self._event("resume", entries=owed, pending=self.journal.pending_credits())

    # --- incoming ----------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """umqtt's callback: returns only once the credit is on flash (the PUBACK follows it)."""
        if topic != self.coin_topic:
            self._event("rejected", reason="unexpected topic")
            return
        parsed = contract.parse_coinpulse(payload, self.machine_id, self._max_credits)
        if isinstance(parsed, str):
            self._event("rejected", reason=parsed)
            return
        credit_id, credits = parsed
        if self.journal.is_duplicate(credit_id):
            self._event("duplicate", id=credit_id)
            return
        self.journal.add(credit_id, credits, self._per_credit)
        self._event("credit", id=credit_id, credits=credits)

    # --- the loop's work ---------------------------------------------------------------------
    @property
    def relay_on(self):
        return self._pulser.relay_on

    @property
    def locked(self):
        return self._lockout is not None and self._lockout.active

    def busy(self):
        """A pulse train is running: nothing that may block on the network now."""
        return self._pulser.busy(self.locked)

    def tick(self, now):
        """Sample inputs and drive the relay; returns ms until the relay needs us (-1: idle)."""
        self._uptime_ms += self._board.ticks_diff(now, self._last_tick)
        self._last_tick = now
        if self._lockout is not None:
            was = self._lockout.active
            self._lockout.poll(now)
            if self._lockout.active != was:
                self._event("lockout", locked=self._lockout.active)
        if self._gameover is not None and self._gameover.poll(now):
            self._event("gameover", id=self._gameover.queue[-1])
        return self._pulser.poll(now, self.locked)

    def stop(self):
        self._pulser.stop()

    # --- outgoing ----------------------------------------------------------------------------
    def connected(self):
        """The link just came up: announce ourselves again."""
        self._status_sent = None

    def status_payload(self, online=True):
        board = self._board
        return contract.status(
            self.machine_id,
            online,
            self._stamp(),
            uptime_s=self._uptime_ms // 1000,
            pending=self.journal.pending_credits(),
            free_mem=board.free_mem(),
            rssi=board.rssi(),
            locked=self.locked,
        )

    def flush(self, link, now):
        """Publish what we owe, oldest duty first; stops at the first failure (link went down)."""
        if not self._flush_status(link, now):
            return False
        entry = self.journal.next_to_ack()
        while entry is not None:
            payload = contract.ack(self.machine_id, entry.credit_id, entry.credits, self._stamp())
            if not link.publish(self._ack_topic, payload, False):
                return False
            self.journal.acked(entry)
            self._event("ack", id=entry.credit_id, credits=entry.credits)
            entry = self.journal.next_to_ack()
        queue = self._gameover.queue if self._gameover is not None else ()
        while queue:
            payload = contract.gameover(self.machine_id, queue[0], self._stamp())
            if not link.publish(self._gameover_topic, payload, False):
                return False
            self._event("gameover_sent", id=queue.pop(0))
        return True

    def _flush_status(self, link, now):
        state = (self.journal.pending_credits(), self.locked)
        due = self._status_sent != state
        if not due and self._board.ticks_diff(now, self._status_at) < self._status_every_ms:
            return True
        if not link.publish(self.status_topic, self.status_payload(), True):
            return False
        self._status_sent = state
        self._status_at = now
        self._event("status", pending=state[0], locked=state[1])
        return True

    # --- helpers -----------------------------------------------------------------------------
    def _on_pulse(self, kind, entry):
        if kind == "pulse":
            self._event("pulse", id=entry.credit_id, n=entry.done + 1, of=entry.total)
        else:
            self._event("paid", id=entry.credit_id, credits=entry.credits)

    def _stamp(self):
        return contract.timestamp(self._board.utc_now())

    def _event(self, kind, **fields):
        self._board.event(kind, fields)
