"""Mosquitto on this machine: password lines, ACLs and a broker process with a generated config.

Used by `arcade provision` (the lines an operator adds to their broker), by `make run` and by the
tests, which all need the same rules: a cabinet reads only its own coinpulse and writes only its
own gameover/status/ack; the API writes any coinpulse and reads the rest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

# Mosquitto 2's password hash: PBKDF2-SHA512, 101 iterations, 12-byte salt ("$7$" lines).
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def password_line(user: str, password: str, salt: bytes | None = None) -> str:
    """One line of a Mosquitto password file, as `mosquitto_passwd` would write it."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"{user}:$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def new_password() -> str:
    return secrets.token_urlsafe(18)


def checked(user: str, prefix: str) -> None:
    """What goes into an ACL line: a newline would add a line, '+' or '#' widen a rule."""
    from api.machines import is_valid_machine_id, topic_prefix_problem

    if not is_valid_machine_id(user):
        raise ValueError(f"user {user!r} must be 1-64 letters, digits, '_' or '-'")
    problem = topic_prefix_problem(prefix)
    if problem:
        raise ValueError(f"topic prefix {problem}")


def cabinet_acl(machine_id: str, prefix: str = "arcade") -> str:
    """ACL block for one cabinet: it may only hear its own coins and speak for itself."""
    checked(machine_id, prefix)
    base = f"{prefix}/machine/{machine_id}"
    return "\n".join(
        [
            f"user {machine_id}",
            f"topic read {base}/coinpulse",
            f"topic write {base}/gameover",
            f"topic write {base}/status",
            f"topic write {base}/ack",
        ]
    )


def api_acl(user: str, prefix: str = "arcade") -> str:
    """ACL block for the API: it credits any cabinet and listens to what cabinets report."""
    checked(user, prefix)
    base = f"{prefix}/machine/+"
    return "\n".join(
        [
            f"user {user}",
            f"topic write {base}/coinpulse",
            f"topic readwrite {base}/gameover",
            f"topic read {base}/status",
            f"topic read {base}/ack",
        ]
    )


def observer_acl(user: str, prefix: str = "arcade") -> str:
    """ACL block for `arcade monitor`: read everything, write nothing."""
    checked(user, prefix)
    return f"user {user}\ntopic read {prefix}/#"


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TlsFiles:
    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass
class Broker:
    """A Mosquitto process on loopback with passwords, an ACL and persistence in `workdir`."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    acl_blocks: list[str] = field(default_factory=list)
    port: int = 0
    tls: TlsFiles | None = None
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    spawn_options: dict = field(default_factory=dict)  # more Popen arguments (env, preexec_fn)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def add_user(self, user: str, password: str, acl: str) -> None:
        self.users[user] = password
        self.acl_blocks.append(acl)

    def write_config(self) -> Path:
        from tools.provision import write_private_text

        passwords = self.workdir / "passwd"
        write_private_text(passwords, "".join(password_line(u, p) + "\n"
                                              for u, p in self.users.items()))
        acl = self.workdir / "acl"
        write_private_text(acl, "\n\n".join(self.acl_blocks) + "\n")
        lines = [
            # Stay as the invoking user even when that is root, so our files stay readable.
            "user root" if os.geteuid() == 0 else "",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {passwords}",
            f"acl_file {acl}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            # Unlimited queue for offline persistent sessions: a paid credit is never dropped.
            "max_queued_messages 0",
            # Coinpulses are tiny: without this, Nagle holds one back until the cabinet's delayed
            # ACK of the previous packet (~20-40 ms per credit on loopback).
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",  # who listens to what: "did my mosquitto_sub subscribe?"
            "connection_messages true",
        ]
        if self.tls:
            lines += [
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
        write_private_text(self.config_path, "\n".join(line for line in lines if line) + "\n")
        return self.config_path

    def start(self, timeout: float = 10.0) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.write_config()
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self.spawn_options,
        )
        self._wait_until_listening(timeout)

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)  # polling for the port; bounded by the deadline above
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on {self.host}:{self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop gracefully (Mosquitto saves its persistence file on SIGTERM)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
