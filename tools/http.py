"""Talking to our own API from the tools (standard library only: no extra dependency)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from tools.errors import UserError

TIMEOUT_S = 15.0


class ApiRefused(UserError):
    """The API answered, but not with success: its own message, exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class Answer:
    status: int
    text: str

    def json(self) -> dict:
        try:
            body = json.loads(self.text)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def reason(self) -> str:
        """The API's {"error": …} message, else the start of the body."""
        return str(self.json().get("error") or self.text.strip()[:200] or "(empty body)")


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST and return the answer, whatever its status; UserError when nothing answers."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(f"cannot reach the API at {url}: {reason} "
                        "(is `arcade serve` running, and is the URL right?)") from None
    except ValueError:
        raise UserError(f"not a usable URL: {url!r}") from None


def post_json(url: str, data: dict, headers: dict[str, str] | None = None) -> Answer:
    return post(url, json.dumps(data).encode(), {"Content-Type": "application/json",
                                                 **(headers or {})})


def operator_auth() -> dict[str, str]:
    """`Authorization` for the operator-only route (POST /create-payment-link): the API's
    OPERATOR_TOKEN, read from the environment or `.env` like every other setting."""
    from tools.settings import load_env, text

    token = text(load_env(), "OPERATOR_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def endpoint(base: str, path: str) -> str:
    return base.rstrip("/") + path
