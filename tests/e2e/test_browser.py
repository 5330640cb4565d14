"""The test-checkout page and the receipt in a real headless browser (Debian's chromium driven by
playwright-core, no browser download): a player opens the cabinet's link, presses "Pay (test)",
lands on the receipt, and watches it end in "credits on the cabinet" — or, for a cabinet that is
offline, in "refunded".

Own marker `browser`: `make test-browser` runs it (installing chromium with apt-get if missing),
and `.ci/run` calls that target after `make test`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from api.store import State
from tests.conftest import REPO
from tests.e2e.conftest import assert_credited
from tests.firmware.conftest import missing, require_node

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")


def require_browser() -> str:
    """node with playwright-core, and Debian's chromium; in CI a missing one is a failure."""
    node = require_node()
    if not CHROMIUM.exists():
        missing("chromium is not installed: `make test-browser` installs it with apt-get")
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        npm = shutil.which("npm") or missing("npm is not installed (apt-get install npm)")
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=REPO, check=True, timeout=300)
    return node


def pay_in_the_browser(node: str, api, machine_id: str, tmp_path: Path) -> dict:
    link = requests.post(f"{api.url}/create-payment-link", json={"machine_id": machine_id},
                         timeout=10).json()
    assert link == {"url": f"{api.url}/test-checkout/{machine_id}", "test": True}
    browser = subprocess.run(
        [node, str(HERE / "browser_pay.mjs"), link["url"], str(tmp_path),
         str(tmp_path / "chromium-profile")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert browser.returncode == 0, browser.stdout + browser.stderr
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert seen["status"] == 200 and seen["title"] == f"TEST checkout — {machine_id}"
    assert seen["banner"] == "TEST MODE — NO REAL PAYMENT"
    assert (seen["machine"], seen["button"]) == (machine_id, "Pay (test)")
    assert seen["receiptPath"].startswith("/receipt/cs_test_local_")
    assert seen["errors"] == []  # on the receipt: no script error, nothing its CSP blocked
    assert seen["width"] <= 390  # one column: nothing wider than the phone
    assert (tmp_path / "receipt-final.png").stat().st_size > 10_000
    return seen


def test_pay_in_a_real_browser_and_watch_the_credit_arrive(make_site, tmp_path):
    node = require_browser()
    site = make_site(TEST_CHECKOUT="true", MACHINE_IDS="cab-a,cab-b")
    site.start_cabinets(["cab-a", "cab-b"])
    site.start_listener()
    api = site.start_api()
    seen = pay_in_the_browser(node, api, "cab-a", tmp_path)
    assert seen["headline"] == "✓ 1 credit on cab-a"
    assert seen["steps"] == ["Paid", "On its way", "On the cabinet"]
    assert "cab-a" in seen["facts"] and "1.00 USD" in seen["facts"]

    # The page made its own session id; the ledger names it.
    [payment] = site.store().payments("cab-a")
    assert seen["receiptPath"] == f"/receipt/{payment.session_id}"
    site.paid["cab-a"] = {payment.session_id: 1}
    assert_credited(site)  # cab-b: no pulse


def test_a_cabinet_that_is_offline_ends_refunded_on_the_page(make_site, tmp_path):
    """Test checkout runs without a Stripe account: the refund is recorded, not sent (refunds to
    the recording Stripe server: tests/e2e/test_refunds.py)."""
    node = require_browser()
    site = make_site(TEST_CHECKOUT="true", MACHINE_IDS="cab-a", REFUND_UNDELIVERED_AFTER_S="4",
                     REFUND_GRACE_S="1", SWEEP_INTERVAL_S="1")
    cabinet = site.start_cabinets(["cab-a"])[0]
    site.start_listener()
    api = site.start_api()
    assert cabinet.stop() == 0  # the cabinet is off; its session queues the credit
    seen = pay_in_the_browser(node, api, "cab-a", tmp_path)
    assert seen["firstHeadline"] == "Paid — sending 1 credit to cab-a…"
    assert seen["headline"] == "Refunded: 1.00 USD"
    assert "5–10 days" in seen["detail"]
    [payment] = site.store().payments("cab-a")
    assert payment.state == State.REFUNDED
    assert payment.parts[0].refund_id.startswith("re_test_local_")
