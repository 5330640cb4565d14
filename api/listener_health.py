"""How fresh the delivery processes' heartbeats are (for /status and `arcade ledger`)."""

from __future__ import annotations

from api.store import Heartbeat

# The listener beats every 15 s; the sweep once per run.
LISTENER_STALE_AFTER_S = 60


def freshness(beats: dict[str, Heartbeat], sweep_interval_s: int, now: float) -> dict[str, str]:
    limits = {"listener": LISTENER_STALE_AFTER_S, "sweep": 3 * sweep_interval_s + 30}
    health = {}
    for name, limit in limits.items():
        beat = beats.get(name)
        health[name] = "none" if beat is None else "ok" if now - beat.at <= limit else "stale"
    return health
