# Start-up and the main loop: runtime check, config, journal, link; one top-level handler leaves
# the relay off.
import sys

from cabinet import Cabinet
from micropython import const

_RETRY_MS = const(10000)  # an unusable config (or runtime) is looked at again this often
_IDLE_MS = const(10)  # loop period when nothing is due: inputs are sampled at least this often
_ERROR_RESET_MS = const(5000)


def _refuse(board, problems):
    """Say what is wrong, relay off, look again every 10 s (fix it with mpremote)."""
    board.relay(False)
    print("The cabinet cannot start; the relay stays off. Problems:")
    for problem in problems:
        print("  " + problem)
    print("retrying in %d s" % (_RETRY_MS // 1000))
    board.event("config_error", {"problems": problems})
    board.sleep_ms(_RETRY_MS)


def load_config(board):
    """A valid config on a MicroPython that can run it, printing what is wrong and retrying
    until both are so (relay off)."""
    import config

    problem = config.runtime_problem(sys.implementation)
    while True:
        if problem is None:
            cfg, problems = config.load(board.CONFIG_PATH)
            if cfg is not None:
                # The rules are needed once per boot: give their ~6 KB of RAM back to the loop.
                sys.modules.pop("config", None)
                return cfg
        else:
            problems = [problem]
        _refuse(board, problems)


class Loop:
    """One cabinet: the logic, the link, the watchdog, stepped forever by run()."""

    def __init__(self, board, cfg, link=None):
        self.board = board
        self.cabinet = Cabinet(board, cfg)
        self.cabinet.resume()
        if link is None:
            from link import Link

            cab = self.cabinet
            link = Link(board, cfg, cab.on_message, board.event, cab.coin_topic, self._last_will)
        self.link = link
        self.running = True
        # Publishing stops after about one socket timeout per pass: with the longest other
        # call (a connect) the pass stays well inside the watchdog (see config.py).
        self._flush_ms = cfg["mqtt"]["timeout_s"] * 1000
        self._wdt = board.watchdog(cfg["watchdog_s"] * 1000)

    def step(self):
        board = self.board
        cab = self.cabinet
        link = self.link
        now = board.ticks_ms()
        wait = cab.tick(now, link.up and cab.owes_acks())
        if not cab.relay_on:  # the relay is never held closed while we talk to the network
            just_up = link.poll(now, not cab.mid_train())
            if just_up:
                cab.connected()  # its status goes in the next pass: one blocking step a pass
            cab.link_problem = link.problem
            if not cab.mid_train():
                # Between trains: acks owed go first (a backlog hears `received` early); a credit
                # to an idle cabinet starts its first pulse in this same pass, status after.
                if link.up and not just_up and (cab.owes_acks() or not cab.ready_to_pulse()):
                    cab.flush(link, now, self._flush_ms)
                wait = cab.tick(board.ticks_ms(), link.up and cab.owes_acks())
        self._wdt.feed()  # only a loop that got here is healthy
        if wait < 0 or wait > _IDLE_MS:
            wait = _IDLE_MS
        # Until the relay's next deadline (inputs are sampled at least every _IDLE_MS), waking
        # early when the broker sends something. A closed relay never waits on the network: the
        # next pass would not read the socket anyway, so a plain sleep ends the pulse when due.
        if cab.relay_on or not link.wait(wait):
            board.sleep_ms(wait)

    def _last_will(self):
        return self.cabinet.status_topic, self.cabinet.status_payload(False)

    def run(self):
        while self.running:
            self.step()

    def shutdown(self):
        self.cabinet.stop()
        self.link.close(self.cabinet.status_topic, self.cabinet.status_payload(False))


def main(board):
    board.relay(False)
    try:
        cfg = load_config(board)
        board.setup(cfg)
        loop = Loop(board, cfg)
        board.started(loop)
        loop.run()
        loop.shutdown()
    except Exception as e:  # last line of defence: relay off, say why, start afresh
        board.relay(False)
        board.event("crash", {"error": repr(e)})
        board.print_exception(e)
        board.sleep_ms(_ERROR_RESET_MS)
        board.reset()
    finally:
        board.relay(False)
