"""The seed's documented routes: /status, /create-payment-link, /gameover."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api import protocol, test_checkout
from api.errors import error_response
from api.logs import note
from api.machines import is_valid_machine_id, token_matches
from api.payments import PaymentsError, payment_link_for
from api.publisher import PublishError
from api.security import (
    Refused,
    bearer_token,
    limit_cabinet,
    limit_client,
    require_link_permission,
)
from api.services import services

bp = Blueprint("views", __name__)

VERSION = "0.1.0"


class BadRequest(ValueError):
    pass


def json_body() -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # "[[[[…" nested deeper than json.loads goes; silent= misses it
        body = None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def machine_id_from(body: dict) -> str:
    machine_id = body.get("machine_id")
    if machine_id is None or machine_id == "":
        raise BadRequest("machine_id is required")
    if not is_valid_machine_id(machine_id):
        raise BadRequest("machine_id must match ^[A-Za-z0-9_-]{1,64}$")
    if not services().settings.machine_allowed(machine_id):
        raise BadRequest(f"unknown machine_id {machine_id!r}")
    note(machine=machine_id)
    return machine_id


@bp.errorhandler(BadRequest)
def _bad_request(error: BadRequest):
    return error_response(400, str(error))


@bp.get("/status")
def status():
    """Fast and local: never calls Stripe and never connects to the broker."""
    svc = services()
    try:
        svc.store.ping()
        store_state = "ok"
    except Exception:  # any failure means "not ok"; the reason is in the server log
        store_state = "error"
    return jsonify(
        status="up",
        message="API is running",
        version=VERSION,
        store=store_state,
        broker="connected" if svc.publisher.connected else "idle",
        delivery=delivery_health(svc) if store_state == "ok" else {},
    )


def delivery_health(svc) -> dict[str, str]:
    """Is anyone recording acks and running the sweep? From their heartbeats in the ledger:
    `ok`, `stale` (silent too long: look at `arcade listen` / the schedule) or `none`."""
    import time

    from api.listener_health import freshness

    try:
        beats = {beat.name: beat for beat in svc.store.heartbeats()}
    except Exception:  # reported as unknown; the reason is in the server log
        return {}
    return freshness(beats, svc.settings.sweep_interval_s, time.time())


@bp.post("/create-payment-link")
def create_payment_link():
    svc = services()
    limit_client("create-payment-link")
    body = json_body()
    machine_id = machine_id_from(body)
    require_link_permission(svc.settings)
    limit_cabinet("create-payment-link", machine_id)
    if svc.settings.test_checkout:
        return jsonify(url=test_checkout.checkout_url(machine_id), test=True)
    price_id = body.get("price_id")
    if price_id is not None and not (isinstance(price_id, str) and price_id):
        raise BadRequest("price_id must be a price id (text), or left out for PRICE_ID")
    price_id = price_id or svc.settings.price_id
    if not price_id:
        return error_response(503, "PRICE_ID is not set on the server")
    if not svc.settings.price_allowed(price_id):
        raise BadRequest("price_id is not one of the allowed prices")
    try:
        url = payment_link_for(svc.store, svc.settings, machine_id, price_id, public_base())
    except PaymentsError as error:
        retry = {"Retry-After": str(error.retry_after)} if error.retry_after else None
        raise Refused(error.status, error.message, retry) from None
    return jsonify(url=url)


def public_base() -> str:
    """Where players reach this API: PUBLIC_URL, else the address this request came to."""
    return services().settings.public_url or request.host_url.rstrip("/")


@bp.post("/gameover")
def gameover():
    svc = services()
    limit_client("gameover")
    machine_id = machine_id_from(json_body())
    secret = svc.settings.machine_token_secret
    if not secret:
        return error_response(503, "MACHINE_TOKEN_SECRET is not set on the server")
    token = bearer_token()
    if not token or not token_matches(secret, machine_id, token):
        return error_response(
            401,
            "a valid 'Authorization: Bearer <machine token>' is required: the cabinet's token is "
            f"printed by `arcade provision {machine_id} --token-only`",
        )
    # After the token: a stranger cannot use up a cabinet's allowance.
    limit_cabinet("gameover", machine_id)
    message = protocol.gameover(machine_id)
    topic = protocol.topic(svc.settings.mqtt_topic_prefix, machine_id, protocol.GAMEOVER)
    try:
        svc.publisher.publish([(topic, protocol.encode(message))])
    except PublishError as error:
        return error_response(503, f"game over not delivered: {error}")
    note(result="published")
    return jsonify(message="Game over signal sent", id=message["id"])
