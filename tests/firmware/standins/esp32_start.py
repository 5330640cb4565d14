# What ports/esp32/main.c does after a reset, on the unix port: run boot.py, then main.py, from
# the flash root (the working directory), in one interpreter. When main.py ends (or raises) the
# board sits at the REPL: only an armed watchdog would reset it.
import sys


def _run(name):
    try:
        with open(name) as f:
            source = f.read()
    except OSError:
        return
    try:
        exec(source, {"__name__": "__main__"})
    except Exception as e:
        sys.print_exception(e)


print("@BOOT")
_run("boot.py")
_run("main.py")
print("@REPL")
import time  # noqa: E402

while True:
    time.sleep(1)
