"""`arcade serve`: the API under gunicorn, the production WSGI server."""

from __future__ import annotations

import os
import sys

import click

from tools.errors import UserError
from tools.settings import api_settings, flag, load_env, text


def gunicorn_argv(host: str, port: int, workers: int, threads: int) -> list[str]:
    return [
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
        "api:create_app()",
    ]


def test_checkout_where_safe(host: str, port: int) -> None:
    """The test page credits for free: on loopback its links point here; on any other address
    only with the network named (TEST_CHECKOUT_NETWORK), else we refuse to start."""
    from api.settings import is_loopback_host

    env = load_env()
    if not flag(env, "TEST_CHECKOUT", False):
        return
    if is_loopback_host(host):
        if not text(env, "PUBLIC_URL"):
            shown = f"[{host}]" if ":" in host else host
            os.environ["PUBLIC_URL"] = f"http://{shown}:{port}"  # the configured host
        return
    if not text(env, "TEST_CHECKOUT_NETWORK"):
        raise UserError(
            f"TEST_CHECKOUT=true with --host {host} would let anyone who reaches this machine "
            "credit cabinets for free: set TEST_CHECKOUT_NETWORK to the network allowed to use "
            "the test page (e.g. 192.168.1.0/24) and PUBLIC_URL to this machine's address on it"
        )


@click.command(epilog="""\b
Example:
  arcade serve --host 0.0.0.0 --port 5000 --workers 4
""")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, help="Threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Run the API with gunicorn."""
    test_checkout_where_safe(host, port)
    api_settings(starting_api=True)  # fail before gunicorn forks: one line naming the variable
    # Replace this process: gunicorn then gets Ctrl-C / SIGTERM directly and stops its workers.
    argv = gunicorn_argv(host, port, workers, threads)
    os.execv(sys.executable, [sys.executable, "-m", *argv])
