# The cabinet's logic, with no network in it: coinpulses in, relay pulses, inputs, and the
# messages it owes the cloud (status, acks, gameover). Hardware comes in as `board`.
import sys

import contract
import ids
from gameover import Debounced, GameOverReporter
from journal import Journal
from micropython import const
from pulser import Pulser

_KEEP_S = const(345600)  # an id without `expires` is kept 4 days (Stripe retries for 3)
_KEEP_AFTER_EXPIRES_S = const(3600)  # and one with it until an hour after its deadline
_MAX_NOTICES = const(8)  # acks owed in RAM only (rejected, expired, repeats); oldest dropped
_STATES = ("", "received", "done", "expired")


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
        self._require_id = cfg["require_id"]
        self.journal = Journal(board.STATE_DIR)
        self._pulser = Pulser(board, self.journal, cfg["relay"], self._on_pulse)
        self._gameover = None
        if "gameover" in cfg:
            self._gameover = GameOverReporter(board, board.gameover_level, cfg["gameover"],
                                              board.gameover_pulses)
        self._lockout = None
        if "lockout" in cfg:
            lock = cfg["lockout"]
            self._lockout = Debounced(board, board.lockout_level, lock["active_low"],
                                      lock["debounce_ms"], True)
        self._status_every_ms = cfg["status_interval_s"] * 1000
        self._status_sent = None  # what the last status said; None forces a status
        self._status_at = 0
        self._uptime_ms = 0
        self._last_tick = board.ticks_ms()
        self.notices = []  # (id, credits, state, reason) acks not backed by the journal
        self.link_problem = None  # (code, detail) from the link: TLS CA, clock
        self.held = None  # the message held at the repeat cap, once the pulser met it

    # --- start-up --------------------------------------------------------------------------
    def resume(self):
        """Load the journal; whatever it still owes is pulsed and acked as if just received."""
        import recovery

        try:
            owed = recovery.load(self.journal)
        except Exception as e:  # unreadable: keep it for a human, never crash-loop on it
            kept = recovery.set_aside(self.journal)
            self._event("journal_unreadable", error=repr(e), kept_as=kept)
            owed = 0
        sys.modules.pop("recovery", None)  # boot-time code: its RAM goes back to the loop
        if self.journal.recent_problem is not None:  # credits kept; only old ids set aside
            self._event("recent_ids_unreadable", error=self.journal.recent_problem)
        self.held = self.journal.held()
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
        credit_id, credits, expires, problem = parsed
        if credit_id is None and problem is None and self._require_id:
            problem = "no id (this cabinet requires one: require_id)"
        if problem is not None:
            self._event("rejected", reason=problem, id=credit_id)
            if credit_id is not None:
                self._notice(credit_id, credits if type(credits) is int else 0, "rejected",
                             problem)
            return
        now_s = self.clock()
        if credit_id is not None:
            known = self.journal.state_of(credit_id, now_s)
            if known:
                self._event("duplicate", id=credit_id, state=_STATES[known])
                self._notice(credit_id, credits, _STATES[known])
                return
            if expires is not None and now_s is not None and now_s > expires:
                self.journal.remember(credit_id, ids.EXPIRED, expires + _KEEP_AFTER_EXPIRES_S)
                self._event("expired", id=credit_id, credits=credits)
                self._notice(credit_id, credits, "expired")
                return
        self.journal.add(credit_id, credits, self._per_credit, self._keep_until(expires, now_s),
                         now_s)
        self._event("credit", id=credit_id, credits=credits)

    def _keep_until(self, expires, now_s):
        if expires is not None:
            return expires + _KEEP_AFTER_EXPIRES_S
        if now_s is None:
            return ids.FOREVER  # no clock: kept until the ring of 2,048 ids overwrites it
        return now_s + _KEEP_S

    def _notice(self, credit_id, credits, state, reason=None):
        if len(self.notices) >= _MAX_NOTICES:
            self.notices.pop(0)  # the API resends what matters; deadlines settle the rest
        self.notices.append((credit_id, credits, state, reason))

    # --- the loop's work ---------------------------------------------------------------------
    @property
    def relay_on(self):
        return self._pulser.relay_on

    @property
    def locked(self):
        return self._lockout is not None and self._lockout.active

    def mid_train(self):
        """A message's pulse train is under way: nothing that may block on the network now."""
        return self._pulser.mid_train(self.locked)

    def tick(self, now, hold=False):
        """Sample inputs and drive the relay; returns ms until the relay needs us (-1: idle).
        hold: acks are owed and the broker is there: send them before the next train."""
        self._uptime_ms += self._board.ticks_diff(now, self._last_tick)
        self._last_tick = now
        if self._lockout is not None:
            was = self._lockout.active
            self._lockout.poll(now)
            if self._lockout.active != was:
                self._event("lockout", locked=self._lockout.active)
        if self._gameover is not None and self._gameover.poll(now):
            self._event("gameover", id=self._gameover.queue[-1])
        return self._pulser.poll(now, self.locked, hold)

    def stop(self):
        self._pulser.stop()

    # --- outgoing ----------------------------------------------------------------------------
    def connected(self):
        """The link just came up: announce ourselves again."""
        self._status_sent = None

    def problem(self):
        """(code, detail) of what needs an operator, or None."""
        if self.held is not None:
            return ("pulse_repeat_cap", "message %s: a pulse was started %d times without being "
                    "recorded; pulsing stopped until released" % (self.held.credit_id,
                                                                   self.held.starts))
        if self.link_problem is not None:
            return self.link_problem
        if self.clock() is None:
            return ("clock_unset", "no NTP time yet: expires cannot be checked")
        return None

    def status_payload(self, online=True):
        board = self._board
        problem = self.problem() or (None, None)
        return contract.status(
            self.machine_id,
            online,
            self._stamp(),
            uptime_s=self._uptime_ms // 1000,
            pending=self.journal.pending_credits(),
            free_mem=board.free_mem(),
            rssi=board.rssi(),
            locked=self.locked,
            problem=problem[0],
            detail=problem[1],
        )

    def ready_to_pulse(self):
        return not self.locked and self.journal.next_to_pulse() is not None

    def owes_acks(self):
        """Acks (or game-over reports) to publish before the next pulse train starts. The next
        train's own `received` is not among them: its `done` follows the train at once."""
        j = self.journal
        if self.notices or j.inbox_untold() or (self._gameover is not None and
                                                 self._gameover.queue):
            return True
        head = j.next_to_pulse()
        for entry in j.entries:
            if not entry.pulsing():
                return True
            if not entry.told and entry is not head and entry.credit_id is not None:
                return True
        return False

    def flush(self, link, now, budget_ms):
        """Publish what we owe, oldest duty first, for at most about budget_ms (each publish
        waits for its PUBACK); False at the first failure (the link went down)."""
        board = self._board
        if not self._flush_status(link, now):
            return False
        while board.ticks_diff(board.ticks_ms(), now) < budget_ms:
            sent = self._publish_next(link)
            if sent is None:
                return True
            if not sent:
                return False
        return True

    def _publish_next(self, link):
        """One publish of the oldest duty: True sent, False failed, None nothing owed."""
        j = self.journal
        if self.notices:
            credit_id, credits, state, reason = self.notices[0]
            if not self._ack(link, credit_id, credits, state, reason):
                return False
            self.notices.pop(0)
            return True
        for entry in j.entries:
            if not entry.pulsing():  # done: one `done` ack says it all
                if not self._ack(link, entry.credit_id, entry.credits, "done"):
                    return False
                self._event("ack", id=entry.credit_id, credits=entry.credits, state="done")
                j.acked(entry, self.clock())
                return True
            if not entry.told and entry.credit_id is not None:
                if not self._ack(link, entry.credit_id, entry.credits, "received"):
                    return False
                entry.told = True
                return True
            entry.told = True
        waiting = j.next_inbox_to_tell()
        if waiting is not None:
            if not self._ack(link, waiting[0], waiting[1], "received"):
                return False
            j.inbox_told = waiting[2]
            return True
        queue = self._gameover.queue if self._gameover is not None else ()
        if queue:
            payload = contract.gameover(self.machine_id, queue[0], self._stamp())
            if not link.publish(self._gameover_topic, payload, False):
                return False
            self._event("gameover_sent", id=queue.pop(0))
            return True
        return None

    def _ack(self, link, credit_id, credits, state, reason=None):
        if credit_id is None:  # the seed's format: nobody to tell
            return True
        payload = contract.ack(self.machine_id, credit_id, credits, state, self._stamp(), reason)
        return link.publish(self._ack_topic, payload, False)

    def _status_state(self):
        return (self.journal.pending_credits(), self.locked, self.problem())

    def _flush_status(self, link, now):
        state = self._status_state()
        due = self._status_sent != state
        if not due and self._board.ticks_diff(now, self._status_at) < self._status_every_ms:
            return True
        if not link.publish(self.status_topic, self.status_payload(), True):
            return False
        self._status_sent = state
        self._status_at = now
        self._event("status", pending=state[0], locked=state[1],
                    problem=state[2][0] if state[2] else None)
        return True

    # --- helpers -----------------------------------------------------------------------------
    def clock(self):
        """Seconds since 2000 when the clock is set (by NTP, now or before a reset), else None."""
        if not self._board.clock_valid():
            return None
        return contract.seconds(self._board.utc_now())

    def _on_pulse(self, kind, entry):
        if kind == "pulse":
            self._event("pulse", id=entry.credit_id, n=entry.done + 1, of=entry.total)
        elif kind == "paid":
            self._event("paid", id=entry.credit_id, credits=entry.credits)
        elif kind == "not_counted":
            self._event("not_counted", id=entry.credit_id, n=entry.done + 1, of=entry.total)
        else:  # held at the repeat cap
            self.held = entry
            self._event("pulse_repeat_cap", id=entry.credit_id, n=entry.done + 1,
                        starts=entry.starts)

    def _stamp(self):
        return contract.timestamp(self._board.utc_now())

    def _event(self, kind, **fields):
        self._board.event(kind, fields)
