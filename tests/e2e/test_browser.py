"""The test-checkout page in a real headless browser (Debian's chromium driven by playwright-core,
no browser download): a player opens the cabinet's link, presses "Pay (test)", the cabinet pulses.

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


def test_pay_button_in_a_real_browser_pulses_the_cabinet(make_site, tmp_path):
    node = require_browser()
    site = make_site(TEST_CHECKOUT="true", MACHINE_IDS="cab-a,cab-b")
    site.start_cabinets(["cab-a", "cab-b"])
    site.start_listener()
    api = site.start_api()
    link = requests.post(f"{api.url}/create-payment-link", json={"machine_id": "cab-a"},
                         timeout=10).json()
    assert link == {"url": f"{api.url}/test-checkout/cab-a", "test": True}

    browser = subprocess.run(
        [node, str(HERE / "browser_pay.mjs"), link["url"], str(tmp_path),
         str(tmp_path / "chromium-profile")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert browser.returncode == 0, browser.stdout + browser.stderr
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert seen["status"] == 200 and seen["title"] == "TEST checkout — cab-a"
    assert seen["banner"] == "TEST MODE — NO REAL PAYMENT"
    assert (seen["machine"], seen["button"]) == ("cab-a", "Pay (test)")
    assert seen["paidStatus"] == 303  # POST-redirect-GET
    assert seen["result"] == "Paid (test): 1 credit(s) sent to cab-a."
    # A reload shows the receipt again and says nothing was sent again (issue 12).
    assert seen["reloaded"].startswith("Already paid (test) at ")
    assert seen["reloaded"].endswith("1 credit(s) went to cab-a; nothing was sent again.")

    # The page made its own session id; the ledger names it.
    [payment] = site.store().payments("cab-a")
    assert payment.session_id.startswith("cs_test_local_")
    site.paid["cab-a"] = {payment.session_id: 1}
    assert_credited(site)  # cab-b: no pulse
    assert (tmp_path / "checkout-paid.png").stat().st_size > 10_000
