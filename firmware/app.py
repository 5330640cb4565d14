# Start-up and the main loop: config, journal, link; one top-level handler leaves the relay off.
import sys

from cabinet import Cabinet
from micropython import const

_CONFIG_RETRY_MS = const(10000)  # an invalid config is re-read this often (fix it with mpremote)
_IDLE_MS = const(10)  # loop period when nothing is due: inputs are sampled at least this often
_ERROR_RESET_MS = const(5000)


def load_config(board):
    """A valid config, printing what is wrong and retrying until there is one (relay off)."""
    import config

    while True:
        cfg, problems = config.load(board.CONFIG_PATH)
        if cfg is not None:
            # The rules are needed once per boot: give their ~6 KB of RAM back to the loop.
            sys.modules.pop("config", None)
            return cfg
        board.relay(False)
        print("config.json is not usable; the relay stays off. Problems:")
        for problem in problems:
            print("  " + problem)
        print("retrying in %d s" % (_CONFIG_RETRY_MS // 1000))
        board.event("config_error", {"problems": problems})
        board.sleep_ms(_CONFIG_RETRY_MS)


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
        self._wdt = board.watchdog(cfg["watchdog_s"] * 1000)

    def step(self):
        board = self.board
        cab = self.cabinet
        link = self.link
        now = board.ticks_ms()
        wait = cab.tick(now)
        if not cab.relay_on:  # the relay is never held closed while we talk to the network
            idle = not cab.busy()
            if link.poll(now, idle):
                cab.connected()
            if not cab.busy():
                if link.up:
                    cab.flush(link, board.ticks_ms())
            elif idle:  # a credit just arrived: its first pulse starts in this same pass
                wait = cab.tick(board.ticks_ms())
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
    cfg = load_config(board)
    board.setup(cfg)
    loop = None
    try:
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
