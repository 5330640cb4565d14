"""`arcade serve` refuses to put the free test checkout where others can reach it."""

from __future__ import annotations

import os
import subprocess
import sys


def serve(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    settings = {"STRIPE_WEBHOOK_SECRET": "whsec_x", "MQTT_BROKER": "127.0.0.1",
                "STORE_URL": f"sqlite:///{tmp_path / 'ledger.db'}", "TEST_CHECKOUT": "true", **env}
    return subprocess.run(
        [sys.executable, "-c", "from tools.cli import main; main()", "serve", *args],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": os.getcwd(),
             **settings},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


def test_test_checkout_on_every_address_is_refused_naming_the_switch(tmp_path):
    result = serve(tmp_path, "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: TEST_CHECKOUT=true with --host 0.0.0.0 would let anyone")
    assert "TEST_CHECKOUT_NETWORK" in line


def test_test_checkout_beside_a_stripe_key_is_refused(tmp_path):
    result = serve(tmp_path, "--port", "1", STRIPE_API_KEY="sk_test_123")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: TEST_CHECKOUT=true needs STRIPE_API_KEY unset: the test page pays for free, so it "
        "never runs beside a Stripe account")
