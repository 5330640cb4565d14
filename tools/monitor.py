"""`arcade monitor`: every arcade message as one readable line, and which cabinets are online."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import click

from tools.errors import UserError
from tools.settings import load_env, text

RAW_PREVIEW = 60  # characters of an unreadable payload worth showing


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retained: bool
    at: datetime


def subscription(prefix: str, machine_id: str | None) -> str:
    return f"{prefix}/machine/{machine_id or '+'}/+"


def decode(payload: bytes) -> dict | None:
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def describe(kind: str, message: dict) -> str:
    """The part of a line that says what happened, per the contract's message kinds."""
    if kind == "coinpulse":
        return f"{message.get('credits')} credit(s)  id={message.get('id', '-')}"
    if kind == "gameover":
        return f"game over  id={message.get('id', '-')}"
    if kind == "ack":
        return f"{message.get('credits')} credit(s) delivered  id={message.get('id', '-')}"
    details = [str(message.get("state", "?"))]
    for key, label in (("firmware", "fw"), ("pending_credits", "pending"), ("uptime_s", "up")):
        if key in message:
            details.append(f"{label} {message[key]}")
    return "  ".join(details)


def format_line(prefix: str, item: Received) -> str:
    from api.protocol import parse_topic

    parsed = parse_topic(prefix, item.topic)
    machine_id, kind = parsed if parsed else ("?", item.topic)
    message = decode(item.payload)
    if message is None:
        what = f"unreadable payload {item.payload[:RAW_PREVIEW]!r}"
    else:
        what = describe(kind, message)
    retained = "  (retained)" if item.retained else ""
    return f"{item.at:%H:%M:%S}  {machine_id:<16} {kind:<9}  {what}{retained}"


class Cabinets:
    """Last known online/offline state per cabinet, from the retained status messages."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.states: dict[str, str] = {}

    def update(self, item: Received) -> bool:
        """True when the list changed."""
        from api.protocol import parse_topic

        parsed = parse_topic(self.prefix, item.topic)
        message = decode(item.payload)
        if not parsed or parsed[1] != "status" or message is None:
            return False
        state = str(message.get("state", "?"))
        changed = self.states.get(parsed[0]) != state
        self.states[parsed[0]] = state
        return changed

    def summary(self) -> str:
        if not self.states:
            return "cabinets: none has reported a status yet"
        listed = ", ".join(f"{machine} {state}" for machine, state in sorted(self.states.items()))
        return f"cabinets: {listed}"

    def table(self) -> list[str]:
        online = sum(state == "online" for state in self.states.values())
        header = f"── cabinets: {online} online of {len(self.states)} " + "─" * 20
        return [header] + [f"  {machine:<16} {state}" for machine, state in
                           sorted(self.states.items())]


class Screen:
    """Message lines scroll; on a terminal the cabinet list stays drawn below them."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.footer: list[str] = []

    def message(self, line: str, footer: list[str]) -> None:
        if not self.live:
            click.echo(line)
            return
        if self.footer:  # move up over the old list and clear it
            click.echo(f"\x1b[{len(self.footer)}F\x1b[J", nl=False, color=True)
        click.echo(line)
        self.footer = footer
        for footer_line in footer:
            click.echo(footer_line)


def watch(settings, topic: str, incoming: queue.Queue) -> object:
    """A client feeding `incoming`, returned once the broker confirmed the subscription."""
    from tools.mqtt import connect

    subscribed = threading.Event()
    refused: list[str] = []

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        refused.extend(str(code) for code in reason_codes if code.is_failure)
        subscribed.set()

    def on_message(client, userdata, msg):
        incoming.put(Received(msg.topic, msg.payload, bool(msg.retain), datetime.now()))

    def on_connected(client):
        client.subscribe(topic, qos=1)  # again after every reconnect

    def setup(client):
        client.on_subscribe = on_subscribe
        client.on_message = on_message

    client = connect(settings, "monitor", setup=setup, on_connected=on_connected)
    if not subscribed.wait(settings.timeout) or refused:
        from tools.mqtt import disconnect

        disconnect(client)
        raise UserError(f"the broker did not allow a subscription to {topic} "
                        f"for {settings.username or 'anonymous'}")
    return client


def run(client_queue: queue.Queue, prefix: str, screen: Screen, cabinets: Cabinets,
        count: int | None, timeout: float | None) -> int:
    """Print messages until `count` arrived or `timeout` passed; returns how many arrived."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    while count is None or shown < count:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            break
        try:
            item = client_queue.get(timeout=wait)
        except queue.Empty:
            break
        cabinets.update(item)
        screen.message(format_line(prefix, item), cabinets.table())
        shown += 1
    return shown


@click.command(epilog="""\b
Examples:
  arcade monitor                      # every cabinet, until Ctrl-C
  arcade monitor machine_123
  arcade monitor --count 3 --timeout 60 | tee log.txt
""")
@click.argument("machine_id", required=False)
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many messages.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Exit after this many seconds.")
def monitor(machine_id: str | None, count: int | None, timeout: float | None) -> None:
    """Print every arcade message (time, machine, kind, credits/state), one line each.

    Uses MQTT_MONITOR_USERNAME/MQTT_MONITOR_PASSWORD when set (a read-only login from
    `arcade provision NAME --role monitor`), else MQTT_USERNAME/MQTT_PASSWORD (the API's login,
    which cannot read coinpulses). Retained statuses arrive first: on a terminal the list of
    cabinets and their online/offline state stays drawn under the messages.
    """
    from tools.mqtt import disconnect, mqtt_settings
    from tools.settings import require_machine_id

    if machine_id is not None:
        require_machine_id(machine_id)
    env = load_env()
    settings = mqtt_settings(env, login="MONITOR")
    topic = subscription(settings.prefix, machine_id)
    incoming: queue.Queue[Received] = queue.Queue()
    client = watch(settings, topic, incoming)
    click.echo(f"listening on {topic} at {settings.host}:{settings.port}", err=True)
    if not text(env, "MQTT_MONITOR_USERNAME"):
        click.echo("note: MQTT_MONITOR_USERNAME is not set; the API's login cannot read "
                   "coinpulses (`arcade provision watcher --role monitor` makes one)", err=True)
    screen, cabinets = Screen(live=sys.stdout.isatty()), Cabinets(settings.prefix)
    shown = 0
    try:
        shown = run(incoming, settings.prefix, screen, cabinets, count, timeout)
    except KeyboardInterrupt:
        pass
    finally:
        disconnect(client)
    if not screen.live:
        click.echo(cabinets.summary())
    if count is not None and shown < count:
        click.echo(f"error: timed out after {timeout:g}s with {shown} of {count} messages",
                   err=True)
        sys.exit(1)
