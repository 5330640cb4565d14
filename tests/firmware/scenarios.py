# Scripted scenarios for the firmware's logic. The same file runs on MicroPython (the WebAssembly
# VM, through run_mpy.mjs) and on CPython; each scenario prints one line
#   RESULT <name> <json observations>
# and tests/firmware/test_logic.py asserts on those observations for both interpreters.
import json
import os
import sys

import app
import config
from fake_board import FakeBoard, FakeLink, PowerCut

MACHINE = "machine_123"
ROOT = "/tmp/arcade-scenarios"
COIN = b"arcade/machine/machine_123/coinpulse"


def base_config(**sections):
    cfg = {
        "machine_id": MACHINE,
        "wifi": {"ssid": "arcade", "password": "x"},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "user": MACHINE, "password": "pw"},
        "relay": {"pin": 26, "active_high": True, "pulse_ms": 100, "gap_ms": 200,
                  "pulses_per_credit": 1},
        "status_interval_s": 10,
    }
    for key in sections:
        if isinstance(sections[key], dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(sections[key])
        else:
            cfg[key] = sections[key]
    problems = config.validate(cfg)
    if problems:
        raise ValueError(str(problems))
    return config.with_defaults(cfg)


def fresh_dir(name):
    for path in (ROOT, ROOT + "/" + name):
        try:
            os.mkdir(path)
        except OSError:
            pass
    path = ROOT + "/" + name
    for entry in os.listdir(path):
        os.remove(path + "/" + entry)
    return path


def coin(credits, credit_id=None, machine=MACHINE, expires=None):
    msg = {"machineId": machine, "credits": credits, "timestamp": "2026-11-27T16:29:15Z"}
    if credit_id is not None:
        msg["id"] = credit_id
    if expires is not None:
        msg["expires"] = expires
    return json.dumps(msg).encode()


class TimedLink(FakeLink):
    """FakeLink plus `arrivals` ([t_ms, topic, payload], in time order): each reaches the
    socket at t_ms, ending a wait() early there as a readable socket ends select.poll."""

    def __init__(self, board, journal_path):
        FakeLink.__init__(self, board, journal_path)
        self.arrivals = []

    def poll(self, now, may_block):
        if self._was_up and self.arrivals and self.arrivals[0][0] <= now:
            self.inbox.append(self.arrivals.pop(0)[1:])
        return FakeLink.poll(self, now, may_block)

    def wait(self, ms):
        if self._was_up and self.arrivals:
            ms = max(0, min(ms, self.arrivals[0][0] - self.board.now))
        return FakeLink.wait(self, ms)


class Rig:
    """A cabinet on a fake board and a fake broker; reboot() keeps only what is on flash."""

    def __init__(self, state, cfg, levels=None, year=2026, wrap=False, start_ms=0):
        self.state = state
        self.cfg = cfg
        self.edges = []
        self.events = []
        self.published = []
        self.board = None
        self.link = None
        self.year = year
        self.wrap = wrap
        self._boot(start_ms, [], levels)

    def _boot(self, start_ms, inbox, levels):
        board = FakeBoard(self.state, start_ms=start_ms, wrap=self.wrap)
        board.year = self.year
        if levels:
            board.levels.update(levels)
        link = TimedLink(board, self.state + "/journal.dat")
        link.inbox = inbox
        self.board, self.link = board, link
        self.loop = app.Loop(board, self.cfg, link)
        link.bind(self.loop.cabinet.on_message)

    def reboot(self, off_ms=1000):
        """Power comes back: the broker redelivers whatever was not PUBACKed."""
        self._collect()
        levels = dict(self.board.levels)
        self._boot(self.board.now + off_ms, self.link.inbox, levels)

    def _collect(self):
        self.edges += self.board.edges
        self.events += self.board.events
        self.published += self.link.published
        self.board.edges, self.board.events, self.link.published = [], [], []

    def send(self, payload, topic=COIN):
        self.link.inbox.append([topic, payload])

    def send_at(self, t_ms, payload, topic=COIN):
        """The broker's delivery reaches the socket at t_ms (virtual), perhaps mid-wait."""
        self.link.arrivals.append([t_ms, topic, payload])

    def run(self, ms):
        end = self.board.now + ms
        while self.board.now < end:
            step(self.loop, self.board)

    def run_until(self, predicate, limit_ms):
        end = self.board.now + limit_ms
        while self.board.now < end and not predicate():
            step(self.loop, self.board)
        return predicate()

    def acked(self):
        """A `done` ack is out (all pulses of a message delivered)."""
        for p in self.link.published:
            if p[1].endswith(b"/ack") and b'"done"' in p[2]:
                return True
        return False

    def observations(self):
        self._collect()
        return {
            "edges": self.edges,
            "events": [[e[0], e[1], e[2]] for e in self.events],
            "published": [[p[0], p[1].decode(), p[2].decode(), p[3]] for p in self.published],
        }


_SPIN_LIMIT = 1000


def step(loop, board):
    """One loop pass; fails a loop that keeps waking at one virtual instant (a readable socket
    that is never read would spin the real board's CPU)."""
    global _same_instant
    before = board.now
    loop.step()
    if board.now != before:
        _same_instant = 0
        return
    _same_instant += 1
    if _same_instant > _SPIN_LIMIT:
        raise RuntimeError("the loop spins at t=" + str(before) + " ms")


_same_instant = 0


def kinds(rig, kind):
    return [e for e in rig.board.events if e[1] == kind]


# --- scenarios ------------------------------------------------------------------------------
def scenario_pulses():
    cfg = base_config(relay={"pulse_ms": 100, "gap_ms": 200, "pulses_per_credit": 2})
    rig = Rig(fresh_dir("pulses"), cfg)
    rig.run(50)
    rig.send(coin(3, "cs_test_pulses"))
    rig.run(3000)
    obs = rig.observations()
    obs["durable_before_puback"] = ["cs_test_pulses" in t for t in rig.link.durable_before_puback]
    obs["watchdog_fed"] = rig.board.wdt.fed
    obs["steps_in_25s"] = 0
    fed = rig.board.wdt.fed
    rig.run(25000)
    obs["periodic"] = [p[1].decode() for p in rig.link.published]
    obs["steps_fed_25s"] = rig.board.wdt.fed - fed
    return obs


def scenario_instant():
    """Credits reaching the socket while the loop waits: idle, mid-pulse, and in a gap."""
    cfg = base_config(relay={"pulse_ms": 100, "gap_ms": 200})
    rig = Rig(fresh_dir("instant"), cfg)
    rig.run(50)  # connected, status sent, idle
    idle_at = rig.board.now + 3  # 3 ms into a 10 ms idle wait
    rig.send_at(idle_at, coin(1, "cs_idle"))
    rig.run(20)
    first_edge = rig.board.edges[0][0]
    mid_pulse_at = first_edge + 30  # the relay is closed: read only once it has opened again
    rig.send_at(mid_pulse_at, coin(2, "cs_mid_pulse"))
    rig.run(150)
    gap_at = rig.board.now + 7  # relay open, gap running, a pulse train still owed
    rig.send_at(gap_at, coin(1, "cs_gap"))
    rig.run(2000)
    obs = rig.observations()
    obs["idle_at"] = idle_at
    obs["mid_pulse_at"] = mid_pulse_at
    obs["gap_at"] = gap_at
    obs["durable_before_puback"] = [
        "cs_idle" in t for t in rig.link.durable_before_puback[:1]]
    return obs


def scenario_dedupe():
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    state = fresh_dir("dedupe")
    rig = Rig(state, cfg)
    rig.send(coin(3, "A"))
    rig.send(coin(3, "A"))  # the API's retry while the first is still pending
    rig.run(300)
    rig.send(coin(1, "A"))  # after it was pulsed and acked
    for i in range(63):
        rig.send(coin(1, "B" + str(i)))
    rig.run_until(lambda: not rig.link.inbox, 20000)
    rig.run(500)
    rig.send(coin(1, "A"))  # A plus 63 more: still inside the 64 remembered ids
    rig.run_until(lambda: not rig.loop.cabinet.journal.entries, 20000)
    rig.reboot()
    rig.send(coin(1, "A"))  # the list survives a reboot
    rig.send(coin(1, "B5"))
    rig.run(200)
    rig.send(coin(1, "C"))  # the 65th id pushes A out of the window
    rig.send(coin(1, "A"))
    rig.run(500)
    obs = rig.observations()
    return obs


def scenario_resume():
    cfg = base_config(relay={"pulse_ms": 100, "gap_ms": 200})
    rig = Rig(fresh_dir("resume"), cfg)
    rig.send(coin(3, "cs_resume"))
    rig.run_until(lambda: len(kinds(rig, "pulse")) == 2, 5000)
    rig.run(50)  # the power goes in the middle of the second pulse
    closed_at_cut = rig.board.relay_closed
    rig.reboot()
    rig.run(3000)
    obs = rig.observations()
    obs["closed_at_cut"] = closed_at_cut
    return obs


def scenario_cut_everywhere():
    """A power cut before every single board operation of a 2-credit message, in turn."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    runs = []
    cut_at = 1
    while True:
        rig = Rig(fresh_dir("cut"), cfg)
        rig.board.cut_at = rig.board.ops + cut_at
        rig.send(coin(2, "cs_cut"))
        cut = False
        try:
            rig.run_until(rig.acked, 2000)
        except PowerCut:
            cut = True
            rig.reboot()
            rig.run_until(rig.acked, 2000)
        obs = rig.observations()
        acks = [p for p in obs["published"] if p[1].endswith("/ack")]
        runs.append({"cut_at": cut_at, "cut": cut, "edges": obs["edges"], "acks": len(acks)})
        if not cut:
            break
        cut_at += 1
    return {"runs": runs}


def scenario_lockout():
    cfg = base_config(lockout={"pin": 25, "active_low": True, "debounce_ms": 50},
                      relay={"pulse_ms": 100, "gap_ms": 200})
    rig = Rig(fresh_dir("lockout"), cfg, levels={"lockout": 0})  # the game refuses coins
    rig.send(coin(2, "cs_lock"))
    rig.run(1000)
    edges_while_locked = len(rig.board.edges)
    locked_status = [json.loads(p[2]) for p in rig.link.published if p[1].endswith(b"/status")]
    rig.board.levels["lockout"] = 1
    rig.run_until(lambda: len(rig.board.edges) == 1, 1000)  # first pulse starts
    rig.board.levels["lockout"] = 0  # locks again mid-pulse: that pulse still completes
    rig.run(1000)
    edges_after_relock = len(rig.board.edges)
    rig.board.levels["lockout"] = 1
    rig.run(1000)
    obs = rig.observations()
    obs["edges_while_locked"] = edges_while_locked
    obs["locked_status"] = locked_status
    obs["edges_after_relock"] = edges_after_relock
    return obs


def scenario_gameover():
    cfg = base_config(gameover={"pin": 27, "active_low": True, "debounce_ms": 50,
                                "min_interval_ms": 2000})
    rig = Rig(fresh_dir("gameover"), cfg)
    levels = rig.board.levels

    def hold(level, ms):
        levels["gameover"] = level
        rig.run(ms)

    rig.run(100)
    hold(0, 30)  # a 30 ms glitch: shorter than the debounce
    hold(1, 500)
    hold(0, 200)  # a real game over -> report 1
    hold(1, 500)
    hold(0, 200)  # again, within min_interval_ms -> ignored
    hold(1, 2500)
    hold(0, 200)  # -> report 2
    hold(1, 2500)
    rig.link.up = False  # offline: reports queue up
    hold(0, 200)  # -> report 3 (queued)
    hold(1, 2500)
    hold(0, 200)  # -> report 4 (queued)
    hold(1, 500)
    queued_offline = len([p for p in rig.link.published if p[1].endswith(b"/gameover")])
    rig.link.up = True
    rig.run(2000)
    rig.link.up = False
    for _ in range(20):  # more than the queue holds
        hold(0, 100)
        hold(1, 2000)
    rig.link.up = True
    rig.run(200)
    obs = rig.observations()
    obs["published_while_offline"] = queued_offline
    return obs


def scenario_unreadable_journal():
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    state = fresh_dir("unreadable")
    with open(state + "/journal.dat", "w") as f:
        f.write("v1 3\n1 2 2 0 \"cs_x\"\n")  # no end marker: never trust it
    rig = Rig(state, cfg)
    rig.send(coin(1, "cs_after"))
    rig.run(300)
    obs = rig.observations()
    obs["files"] = sorted(os.listdir(state))
    return obs


# A board upgraded from firmware 1.0 keeps its files: recent.dat then held one JSON id a line.
_OLD_RECENT = '"A"\n"cs_old"\nend\n'
_PENDING_JOURNAL = 'v1 5\n4 1 1 0 "cs_pending"\nend\n'  # one credit owed, no pulse yet


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _old_recent_v2():
    """recent.dat of firmware 1.0.x: the first 12 bytes of SHA-256 of each id, in hex."""
    import hashlib

    lines = [_RECENT_V2]
    for credit_id in ("A", "cs_old"):
        lines.append(hashlib.sha256(credit_id.encode()).digest()[:12].hex())
    return "\n".join(lines) + "\nend\n"


_RECENT_V2 = "v2 sha256/96"


def scenario_recent_upgrade():
    """The old id list (either format) goes into ids.bin; its ids stay duplicates."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    runs = []
    for old in (_OLD_RECENT, _old_recent_v2()):
        state = fresh_dir("upgrade")
        _write(state + "/recent.dat", old)
        _write(state + "/journal.dat", _PENDING_JOURNAL)
        rig = Rig(state, cfg)
        converted = sorted(os.listdir(state))
        for credit_id in ("A", "cs_old", "cs_pending", "cs_new"):
            rig.send(coin(1, credit_id))
        rig.run_until(lambda r=rig: not r.link.inbox and not r.loop.cabinet.journal.entries, 5000)
        rig.reboot()
        for credit_id in ("A", "cs_old", "cs_pending", "cs_new"):
            rig.send(coin(1, credit_id))
        rig.run(500)
        obs = rig.observations()
        obs["converted"] = converted
        obs["files"] = sorted(os.listdir(state))
        runs.append(obs)
    return {"runs": runs}


def scenario_recent_unreadable():
    """An id list in no format we know is set aside; the credits owed in the journal are kept."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    runs = []
    for text in ("v9 from the future\nend\n", '"A"\n"cs_cut', "\xff\xfe\nend\n"):
        state = fresh_dir("unreadable_recent")
        _write(state + "/recent.dat", text)
        _write(state + "/journal.dat", _PENDING_JOURNAL)
        rig = Rig(state, cfg)
        rig.send(coin(1, "cs_pending"))  # the broker's redelivery: still a duplicate
        rig.run(300)
        rig.send(coin(1, "cs_after"))
        rig.run(300)
        obs = rig.observations()
        obs["files"] = sorted(os.listdir(state))
        runs.append(obs)
    return {"runs": runs}


def acks(rig):
    """[id, state, reason] of every ack published so far (this boot and the ones before)."""
    rig._collect()
    out = []
    for p in rig.published:
        if p[1].endswith(b"/ack"):
            body = json.loads(p[2])
            out.append([body["id"], body.get("state"), body.get("reason"), body["credits"]])
    return out


def scenario_ack_states():
    """Protocol v2: expires against a valid clock, rejected ids, repeats re-acked with the state
    the cabinet knows, and what an unset clock does to expires."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    rig = Rig(fresh_dir("ack_states"), cfg)  # the fake clock reads 2026-11-27
    rig.send(coin(1, "cs_late", expires="2026-11-01T00:00:00Z"))  # deadline passed
    rig.send(coin(1, "cs_fresh", expires="2026-12-31T00:00:00Z"))
    rig.send(coin(21, "cs_too_many"))
    rig.send(coin(1, "cs_bad_expiry", expires="tomorrow"))
    rig.run(500)
    rig.send(coin(1, "cs_late", expires="2026-11-01T00:00:00Z"))  # the API's resend
    rig.send(coin(1, "cs_fresh", expires="2026-12-31T00:00:00Z"))
    rig.run(500)
    obs = {"acks_valid_clock": acks(rig), "pulses_valid_clock": len(rig.edges) // 2}
    rig2 = Rig(fresh_dir("ack_states_unset"), cfg, year=2000)  # the RTC before NTP
    rig2.send(coin(1, "cs_late_unset", expires="2026-11-01T00:00:00Z"))
    rig2.run(500)
    obs["acks_unset_clock"] = acks(rig2)
    obs["pulses_unset_clock"] = len(rig2.edges) // 2
    obs["status_unset_clock"] = [json.loads(p[2]) for p in rig2.published
                                 if p[1].endswith(b"/status")]
    strict = base_config(relay={"pulse_ms": 20, "gap_ms": 20}, require_id=True)
    rig3 = Rig(fresh_dir("ack_states_strict"), strict)
    rig3.send(coin(1))
    rig3.run(300)
    obs["strict_pulses"] = len(rig3.edges) // 2
    obs["strict_rejected"] = [e[2] for e in rig3.board.events if e[1] == "rejected"]
    return obs


def scenario_backlog():
    """A broker delivering 100 queued coinpulses at once: beyond 32 they wait on flash (the
    inbox), every one is pulsed once, `received` is out before each train, `done` after it."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20, "pulses_per_credit": 1})
    rig = Rig(fresh_dir("backlog"), cfg)
    for i in range(100):
        rig.send(coin(1 + i % 2, f"cs_backlog_{i:03d}"))
    most = [0]
    inboxes = [False]

    def done():
        entries = rig.loop.cabinet.journal.entries
        most[0] = max(most[0], len(entries))
        inboxes[0] = inboxes[0] or rig.loop.cabinet.journal.inbox_waiting > 0
        return not rig.link.inbox and not entries

    rig.run_until(done, 120000)
    obs = rig.observations()
    obs["most_in_ram"] = most[0]
    obs["used_inbox"] = inboxes[0]
    obs["files"] = sorted(os.listdir(rig.state))
    return obs


def scenario_repeat_cap():
    """A reset that recurs between closing the relay and recording the pulse (a relay coil that
    browns the supply out): the pulse is started at most MAX_STARTS times, then held."""
    cfg = base_config(relay={"pulse_ms": 50, "gap_ms": 50})
    rig = Rig(fresh_dir("repeat_cap"), cfg)
    rig.send(coin(2, "cs_brownout"))
    boots = 0
    for _ in range(6):
        rig.run_until(lambda: rig.board.relay_closed or kinds(rig, "pulse_repeat_cap"), 2000)
        if not rig.board.relay_closed:
            break
        boots += 1
        rig.reboot()  # the relay closed: the supply browns out, the board resets
    rig.run(2000)
    held_edges = len(rig.board.edges)
    status = [json.loads(p[2]) for p in rig.link.published if p[1].endswith(b"/status")]
    rig._collect()
    import recovery

    released = recovery.release(rig.state)  # the operator, at the REPL, after fixing the supply
    rig.reboot()
    rig.run_until(rig.acked, 5000)
    obs = rig.observations()
    obs["boots"] = boots
    obs["held_edges"] = held_edges
    obs["held_status"] = status
    obs["released"] = released
    return obs


def scenario_lockout_instant():
    """The game locks its coin input 5 ms before a credit arrives (inside the debounce): no pulse
    goes in until it unlocks; a lock that starts while the relay is closed voids that pulse."""
    cfg = base_config(lockout={"pin": 25, "active_low": True, "debounce_ms": 50},
                      relay={"pulse_ms": 100, "gap_ms": 200})
    rig = Rig(fresh_dir("lockout_instant"), cfg)
    rig.run(100)
    rig.board.levels["lockout"] = 0
    rig.run(5)
    rig.send(coin(1, "cs_locked_early"))
    rig.run(500)
    edges_while_locked = len(rig.board.edges)
    rig.board.levels["lockout"] = 1
    rig.run_until(rig.acked, 2000)
    obs = rig.observations()
    obs["edges_while_locked"] = edges_while_locked
    return obs


def scenario_gameover_latched():
    """A game-over pulse that came and went while the loop was blocked (a connect): the pin
    interrupt counted it, the poll never saw it active; it is reported once."""
    cfg = base_config(gameover={"pin": 27, "active_low": True, "debounce_ms": 50,
                                "min_interval_ms": 0})
    rig = Rig(fresh_dir("gameover_latched"), cfg)
    rig.run(100)
    rig.board.gameover_latched += 1  # counted by the IRQ during a blocked pass
    rig.run(500)
    latched_reports = len(kinds(rig, "gameover"))
    rig.board.levels["gameover"] = 0  # a long one the poll sees too: counted once
    rig.run(3000)
    rig.board.levels["gameover"] = 1
    rig.board.gameover_latched += 1  # the IRQ counts it as well, at its end
    rig.run(3000)
    return {"latched_reports": latched_reports, "total_reports": len(kinds(rig, "gameover"))}


_DAY_MS = 86400000


def scenario_tick_wrap():
    """ticks_ms wraps every 2**30 ms (12.4 days) on the ESP32: a game-over report 7 days after the
    last one is still sent; a link down for 7 days still retries (loop passes a day apart)."""
    cfg = base_config(gameover={"pin": 27, "active_low": True, "debounce_ms": 50,
                                "min_interval_ms": 2000})
    rig = Rig(fresh_dir("tick_wrap"), cfg, wrap=True, start_ms=(1 << 30) - 5000)
    levels = rig.board.levels

    def press():
        levels["gameover"] = 0
        rig.run(200)
        levels["gameover"] = 1
        rig.run(200)

    press()
    for _ in range(7):  # a week with nothing happening (a pass at least daily)
        rig.board.now += _DAY_MS
        step(rig.loop, rig.board)
    press()
    reports = len(kinds(rig, "gameover"))
    return {"reports": reports, "link": _link_after_a_week()}


# umqtt.simple for link.py where nothing answers: the link's retries are what we watch.
_NO_BROKER = """socket = None


class MQTTClient:
    def __init__(self, *args, **kwargs):
        self.sock = None

    def set_callback(self, f):
        pass

    def set_last_will(self, *args):
        pass

    def connect(self, *args):
        raise OSError(113)
"""


def _link_after_a_week():
    state = fresh_dir("tick_wrap_link")
    package = ROOT + "/no_broker"
    for folder in (package, package + "/umqtt"):
        try:
            os.mkdir(folder)
        except OSError:
            pass
    _write(package + "/umqtt/__init__.py", "")
    _write(package + "/umqtt/simple.py", _NO_BROKER)
    saved = {name: sys.modules.pop(name, None) for name in ("link", "umqtt", "umqtt.simple")}
    sys.path.insert(0, package)
    try:
        import link
    finally:
        sys.path.remove(package)
    board = FakeBoard(state, wrap=True, start_ms=(1 << 30) - 5000)
    board.wifi = False
    board.wifi_ready = lambda wifi, now: board.wifi
    board.resolve = lambda host, port: ("127.0.0.1", port)
    cfg = base_config()
    lk = link.Link(board, cfg, None, board.event, COIN, lambda: (b"t", b"p"))
    lk.poll(board.ticks_ms(), True)
    for _ in range(7):  # WiFi gone for a week
        board.now += _DAY_MS
        lk.poll(board.ticks_ms(), True)
    board.wifi = True
    attempts = 0
    for _ in range(100):  # back: a connect is tried within seconds (DNS, then connect)
        board.now += 100
        lk.poll(board.ticks_ms(), True)
    attempts = len([e for e in board.events if e[1] == "connect_failed"])
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    return {"attempts_within_10s": attempts}


def scenario_stripe_retry():
    """A Stripe retry (same id, no expires: an old API) after 1,000 other messages: dropped."""
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    rig = Rig(fresh_dir("stripe_retry"), cfg)
    rig.send(coin(1, "cs_live_first"))
    rig.run_until(rig.acked, 2000)
    for i in range(1000):
        rig.send(coin(1, f"cs_live_other_{i:04d}"))
        if i % 50 == 49:
            rig.run_until(lambda: not rig.link.inbox and not rig.loop.cabinet.journal.entries,
                          60000)
            rig._collect()
            del rig.edges[:], rig.events[:], rig.published[:]
    rig.reboot()
    rig.send(coin(1, "cs_live_first"))  # hours later, after the API answered 503
    rig.run(500)
    obs = rig.observations()
    return {"duplicates": [e[2]["id"] for e in obs["events"] if e[1] == "duplicate"],
            "pulses_after": len(obs["edges"]) // 2, "acks_after": acks(rig)}


class _FailingRename:
    """os for journal.py, whose next rename fails with EIO (a flash error), not EEXIST."""

    def __init__(self, real):
        self._real = real
        self.fail = 2  # a flash that fails keeps failing

    def rename(self, old, new):
        if self.fail:
            self.fail -= 1
            raise OSError(5)  # EIO
        self._real.rename(old, new)

    def __getattr__(self, name):
        return getattr(self._real, name)


def scenario_rename_error():
    """A rename that fails for another reason than FAT's EEXIST keeps the good journal."""
    import journal
    import recovery

    state = fresh_dir("rename_error")
    j = journal.Journal(state)
    recovery.load(j)
    j.add("cs_kept", 2, 1)
    real_os = journal.os
    journal.os = _FailingRename(real_os)
    raised = None
    try:
        j.add("cs_failed", 1, 1)
    except OSError as e:
        raised = e.args[0]
    finally:
        journal.os = real_os
    again = journal.Journal(state)
    recovery.load(again)
    return {"raised": raised, "files": sorted(os.listdir(state)),
            "after_reboot": [e.credit_id for e in again.entries]}


MALFORMED = [
    b"",
    b"not json",
    b"[1, 2]",
    b'"credits"',
    b"{}",
    b'{"credits": 0}',
    b'{"credits": -1}',
    b'{"credits": 21}',
    b'{"credits": 1.0}',
    b'{"credits": 1.5}',
    b'{"credits": "1"}',
    b'{"credits": true}',
    b'{"credits": null}',
    b'{"credits": [1]}',
    b'{"credits": 100000000000000000000000000000}',
    b'{"machineId": "machine_456", "credits": 1}',
    b'{"machineId": null, "credits": 1}',
    b'{"credits": 1, "id": 5}',
    b'{"credits": 1, "id": ""}',
    b'{"credits": 1, "id": ["a"]}',
    b'{"credits": 1, "id": "' + b"x" * 200 + b'"}',
    b'{"credits": 1, "pad": "' + b"x" * 600 + b'"}',
    b"\xff\xfe\x00",
    b"[" * 200,
    b'{"credits": 1',
]


def scenario_malformed():
    cfg = base_config(relay={"pulse_ms": 20, "gap_ms": 20})
    rig = Rig(fresh_dir("malformed"), cfg)
    for payload in MALFORMED:
        rig.send(payload)
    rig.send(coin(1, "wrong-topic"), b"arcade/machine/machine_456/coinpulse")
    rig.run_until(lambda: not rig.link.inbox, 5000)
    rig.run(200)
    pulses_after_bad = len(rig.board.edges)
    seed = b'{"machineId": "machine_123", "credits": 2, "timestamp": "2026-11-27T16:29:15Z"}'
    rig.send(seed)  # the seed's format has no id: credited every time
    rig.send(seed)
    rig.run(1000)
    obs = rig.observations()
    obs["pulses_after_bad"] = pulses_after_bad
    obs["sent_bad"] = len(MALFORMED) + 1
    return obs


def scenario_config_errors():
    state = fresh_dir("config")
    bad = {"machine_id": "bad/id", "wifi": {"ssid": ""}, "mqtt": {"host": "h", "port": 0},
           "relay": {"pin": 34, "pulse_ms": "100"}, "lockout": {"pin": 7}, "colour": "red"}
    with open(state + "/config.json", "w") as f:
        f.write(json.dumps(bad))
    board = FakeBoard(state, config_path=state + "/config.json")
    board.sleeps_left = 1  # let it retry once, then stop the test
    retried = False
    try:
        app.load_config(board)
    except PowerCut:
        retried = True
    problems = [e[2]["problems"] for e in board.events if e[1] == "config_error"]
    with open(state + "/config.json", "w") as f:
        f.write("{not json")
    board2 = FakeBoard(state, config_path=state + "/config.json")
    board2.sleeps_left = 0
    try:
        app.load_config(board2)
    except PowerCut:
        pass
    problems2 = [e[2]["problems"] for e in board2.events if e[1] == "config_error"]

    class Interpreter:  # what sys.implementation says
        def __init__(self, name, version):
            self.name = name
            self.version = version

    runtime = [config.runtime_problem(Interpreter(name, version)) for name, version in (
        ("micropython", (1, 22, 2, "")), ("micropython", (1, 25, 0, "")),
        ("micropython", (1, 27, 0, "")), ("cpython", (3, 11, 7)))]
    return {"retried": retried, "problems": problems, "problems_not_json": problems2,
            "relay_edges": board.edges, "relay_calls_closed": board.relay_closed,
            "runtime": runtime}


class _FakeMachine:
    """`machine` for boot.py: records every Pin() it is asked for."""

    calls = []

    class Pin:
        IN = 1
        OUT = 3

        def __init__(self, pin, mode, value=None):
            _FakeMachine.calls.append([pin, mode, value])


def scenario_boot():
    state = fresh_dir("boot")
    with open(FIRMWARE + "/boot.py") as f:
        source = f.read()
    sys.modules["machine"] = _FakeMachine
    results = []
    here = os.getcwd()
    os.chdir(state)
    try:
        for cfg in (None, {"relay": {"pin": 4, "active_high": False}}, {"relay": {"pin": 7}},
                    "{broken", {"relay": {"pin": 27, "active_high": "yes"}}, {"wifi": {}},
                    {"relay": {"pin": 1}}):
            _FakeMachine.calls = []
            if cfg is None:
                _remove("config.json")
            else:
                with open("config.json", "w") as f:
                    f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
            before = set(sys.modules)
            exec(source, {"__name__": "boot"})
            ours = [m for m in sys.modules if m not in before and m in FIRMWARE_MODULES]
            results.append({"calls": _FakeMachine.calls, "imported_ours": ours})
    finally:
        os.chdir(here)
        del sys.modules["machine"]
    return {"boots": results}


FIRMWARE_MODULES = ("app", "board", "cabinet", "config", "contract", "gameover", "ids",
                    "journal", "link", "pulser", "recovery")
FIRMWARE = "/fw"


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


SCENARIOS = {
    "pulses": scenario_pulses,
    "instant": scenario_instant,
    "dedupe": scenario_dedupe,
    "resume": scenario_resume,
    "cut_everywhere": scenario_cut_everywhere,
    "lockout": scenario_lockout,
    "gameover": scenario_gameover,
    "malformed": scenario_malformed,
    "config_errors": scenario_config_errors,
    "boot": scenario_boot,
    "unreadable_journal": scenario_unreadable_journal,
    "recent_upgrade": scenario_recent_upgrade,
    "recent_unreadable": scenario_recent_unreadable,
    "ack_states": scenario_ack_states,
    "backlog": scenario_backlog,
    "repeat_cap": scenario_repeat_cap,
    "lockout_instant": scenario_lockout_instant,
    "gameover_latched": scenario_gameover_latched,
    "tick_wrap": scenario_tick_wrap,
    "stripe_retry": scenario_stripe_retry,
    "rename_error": scenario_rename_error,
}


def main(root=None, firmware=None, only=None):
    global ROOT, FIRMWARE
    if root:
        ROOT = root
    if firmware:
        FIRMWARE = firmware
    for name in SCENARIOS:
        if only and name not in only:
            continue
        print("RESULT " + name + " " + json.dumps(SCENARIOS[name]()))
