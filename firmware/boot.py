# Runs first after every reset: make sure the relay cannot close before the config is read, so
# a reset, a crash or a bad config never closes the coin line (a free credit).
#
# From reset until here every ESP32 pin is a high-impedance input, and a relay module wired as
# docs/firmware.md requires is off while its input floats. When config.json names the relay pin
# AND its polarity (relay.pin, relay.active_high, read with the built-in json module only: none
# of our modules, no WiFi), the pin is driven to its inactive level at once. Otherwise nothing
# about the wiring is known: driving any level could close an active-low module, so the pin is
# left a floating input and main.py reports the problem (GPIO26 is set to input explicitly, as
# it is the documented default).
import machine

_pin = _active_high = None
try:
    import json

    with open("config.json") as _f:
        _relay = json.load(_f).get("relay", {})
    _pin = _relay.get("pin", 26)
    _active_high = _relay.get("active_high", True)
except Exception:
    pass
if type(_pin) is not int or not 0 <= _pin <= 33 or _pin in (1, 3, 6, 7, 8, 9, 10, 11):
    _pin = None  # no pin, or one that must never be driven: main.py reports the mistake
try:
    if _pin is not None and type(_active_high) is bool:
        # value= sets the level before the pin turns into an output: no glitch.
        machine.Pin(_pin, machine.Pin.OUT, value=0 if _active_high else 1)
    else:
        machine.Pin(26 if _pin is None else _pin, machine.Pin.IN)  # float: off by wiring
except Exception as _e:  # a bad pin number: main.py reports it and keeps everything off
    print("boot: cannot set the relay pin", _pin, _e)
