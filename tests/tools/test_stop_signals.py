"""Long-running commands stop on SIGTERM / Ctrl-C, however the signals fall.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread
holds a lock; a handler that takes the same lock (threading.Event.set() while the main thread is in
the event's wait()) never returns. CI met it: an `arcade listen` that outlived `arcade run`.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess

import pytest

from tests.tools.conftest import arcade_process

BURST = 200

# A second stop signal at the worst moment, every time: just as the main thread has taken a lock
# back on waking (what a burst of signals hits only now and then).
SECOND_SIGNAL_AT_THE_WORST_MOMENT = """
import os, signal, sys, threading

sent = []

def on_return(frame, event, arg):
    if event == "return" and not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
    return on_return

def in_listen(frame):
    # Called by the main thread's wait for the stop, in `listen` itself.
    for _ in range(3):  # Condition.wait <- Event.wait <- listen
        frame = frame.f_back
        if frame is None:
            return False
    return frame.f_code.co_name == "listen" and frame.f_code.co_filename.endswith("listen.py")

def tracer(frame, event, arg):
    # Waking from a wait for the stop (not the start-up's waits): the lock is taken back.
    if event == "call" and frame.f_code.co_name == "_acquire_restore" and in_listen(frame):
        return on_return
    return None

sys.settrace(tracer)
from tools.cli import main
main()
"""


def ended_within(process: subprocess.Popen, seconds: float) -> bool:
    fd = os.pidfd_open(process.pid)
    try:
        return bool(select.select([fd], [], [], seconds)[0])
    finally:
        os.close(fd)


def wait_line(process: subprocess.Popen, text: str) -> None:
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed; stderr: {process.stderr.read()[-2000:]}")


def test_listen_stops_when_a_second_signal_lands_as_it_wakes(tmp_path, api_login_env):
    env = {**api_login_env, "STORE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
           "STRIPE_WEBHOOK_SECRET": "whsec_x"}
    listener = arcade_process(["listen"], env, tmp_path,
                              argv=["-c", SECOND_SIGNAL_AT_THE_WORST_MOMENT])
    try:
        wait_line(listener, "listening on")
        os.kill(listener.pid, signal.SIGTERM)
        assert ended_within(listener, 30), "still running after its stop signals"
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["term", "int"])
def test_listen_stops_on_a_burst_of_stop_signals(tmp_path, api_login_env, signum):
    env = {**api_login_env, "STORE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
           "STRIPE_WEBHOOK_SECRET": "whsec_x"}
    listener = arcade_process(["listen"], env, tmp_path)
    try:
        wait_line(listener, "listening on")
        for _ in range(BURST):  # a terminal's Ctrl-C plus a supervisor's SIGTERM, and more
            if listener.poll() is not None:
                break
            os.kill(listener.pid, signum)
        assert ended_within(listener, 30), "still running after its stop signals"
        assert listener.wait() == 0
    finally:
        listener.kill()
        listener.wait()
