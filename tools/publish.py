"""`arcade publish`: contract-conformant test messages, without needing mosquitto-clients."""

from __future__ import annotations

import uuid

import click

from tools.errors import UserError
from tools.settings import integer, load_env, require_machine_id


def coinpulse_message(machine_id: str, credits: int, credit_id: str | None) -> dict:
    from api.protocol import coinpulse

    # An id makes a retried publish harmless: the cabinet credits each id once.
    return coinpulse(machine_id, credits, credit_id or f"cli-{uuid.uuid4().hex[:12]}")


def send(kind: str, machine_id: str, message: dict) -> None:
    from api.protocol import encode, topic
    from tools.mqtt import mqtt_settings, publish_and_wait

    settings = mqtt_settings(load_env())
    name = topic(settings.prefix, machine_id, kind)
    publish_and_wait(settings, name, encode(message))
    click.echo(f"published {name} (PUBACK received): {encode(message).decode()}")


@click.group(epilog="""\b
Examples:
  arcade publish coinpulse machine_123 --credits 2
  arcade publish gameover machine_123
""")
def publish() -> None:
    """Publish one test message (QoS 1) with the broker settings from .env (MQTT_*)."""


@publish.command(epilog="""\b
Example:
  arcade publish coinpulse machine_123 --credits 2 --id test-0001
""")
@click.argument("machine_id")
@click.option("--credits", type=click.IntRange(min=1), default=1, show_default=True,
              help="Credits to insert.")
@click.option("--id", "credit_id", help="Message id (the cabinet credits each id once) "
              "[default: a new cli-… id].")
def coinpulse(machine_id: str, credits: int, credit_id: str | None) -> None:
    """Credit a cabinet, as the API does after a payment."""
    require_machine_id(machine_id)
    limit = integer(load_env(), "MAX_CREDITS_PER_MESSAGE", 20)
    if credits > limit:
        raise UserError(f"--credits {credits} is above the cabinets' limit of {limit} per message "
                        "(MAX_CREDITS_PER_MESSAGE); a cabinet would ignore it")
    send("coinpulse", machine_id, coinpulse_message(machine_id, credits, credit_id))


@publish.command(epilog="""\b
Example:
  arcade publish gameover machine_123
""")
@click.argument("machine_id")
def gameover(machine_id: str) -> None:
    """Report a game over for a cabinet, as the cabinet would."""
    from api.protocol import gameover as gameover_message

    require_machine_id(machine_id)
    send("gameover", machine_id, gameover_message(machine_id))
