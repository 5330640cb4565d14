# Runs first after every reset: open the relay before anything else can happen, so a reset,
# a crash or a bad config never closes the coin line (a free credit).
#
# Where the pin comes from: config.json's relay.pin / relay.active_high, read here with the
# built-in json module only (none of our modules, no WiFi). If the file is missing or unreadable
# we fall back to the documented default wiring, GPIO26 active-high. An ESP32 pin is a
# high-impedance input from reset until this line, so use a relay module that is off when its
# input floats (see docs/firmware.md).
import machine

_pin, _active_high = 26, True
try:
    import json

    with open("config.json") as _f:
        _relay = json.load(_f).get("relay", {})
    _pin = _relay.get("pin", _pin)
    _active_high = _relay.get("active_high", _active_high)
except Exception:
    pass
if type(_pin) is not int or not 0 <= _pin <= 33 or 6 <= _pin <= 11:
    _pin = 26  # flash or input-only pins must never be driven; main.py reports the mistake
try:
    # value= sets the level before the pin turns into an output: no glitch.
    machine.Pin(_pin, machine.Pin.OUT, value=0 if _active_high is not False else 1)
except Exception as _e:  # a bad pin number: main.py reports it and keeps everything off
    print("boot: cannot drive relay pin", _pin, _e)
