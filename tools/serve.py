"""`arcade serve`: the API under gunicorn, the production WSGI server."""

from __future__ import annotations

import os
import sys

import click

from tools.settings import api_settings


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
    api_settings()  # fail before gunicorn forks, with one line naming a bad variable
    # Replace this process: gunicorn then gets Ctrl-C / SIGTERM directly and stops its workers.
    argv = gunicorn_argv(host, port, workers, threads)
    os.execv(sys.executable, [sys.executable, "-m", *argv])
