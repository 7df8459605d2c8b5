"""vault-api's dashboard (GET /ui) in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium): it signs in with a client token, shows a deposited pool,
updates by itself when a token is revoked through the API, and freezes a pool from its button.
Set TV_UI_SCREENSHOT=path to save a screenshot (the README's comes from here)."""

from __future__ import annotations

import os
import shutil
import urllib.request

import pytest

from conftest import PATIENCE_S
from tokenvault import Vault

selenium = pytest.importorskip("selenium")  # installed by scripts/setup.sh; see tests/e2e/python.rs
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The page re-renders its rows whenever an event arrives: an element found a moment ago may be
# gone. So no element is held across a wait; each helper finds it again inside the wait, and a
# stale one just means "not yet". The deadline is far: a busy machine is slow, not wrong.
DEADLINE_S = PATIENCE_S


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    assert browser and os.path.exists(driver), \
        "chromium and chromium-driver are needed: run scripts/setup.sh"
    return browser, driver


@pytest.fixture
def browser():
    binary, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1500,820", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def until(driver, condition):
    """Wait for `condition(driver)` to be truthy, a stale element counting as not yet."""
    return WebDriverWait(driver, DEADLINE_S,
                         ignored_exceptions=[StaleElementReferenceException]).until(condition)


def wait_for(driver, css):
    """Wait until an element matching `css` is on the page."""
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, css))


def wait_text(driver, css, want):
    """Wait until the element matching `css` has a text for which `want(text)` holds; returns
    that text (read in the same step that found the element)."""
    def text(d):
        t = d.find_element(By.CSS_SELECTOR, css).text
        return t if want(t) else None
    return until(driver, text)


def click(driver, css):
    """Click the element matching `css`, finding it again if the page re-rendered it."""
    def clicked(d):
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    until(driver, clicked)


def type_into(driver, css, text):
    """Clear the input matching `css` and type `text` into it, in one step."""
    def typed(d):
        box = d.find_element(By.CSS_SELECTOR, css)
        box.clear()
        box.send_keys(text)
        return True
    until(driver, typed)


def test_the_page_is_locked_down(vault_server):
    with urllib.request.urlopen(vault_server.url + "/ui") as r:
        assert r.headers["Content-Type"].startswith("text/html")
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'sha256-" in csp and "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        page = r.read().decode()
    # Self-contained: nothing is loaded from anywhere else.
    assert "http://" not in page and "https://" not in page
    with urllib.request.urlopen(vault_server.url + "/") as r:
        assert r.geturl().endswith("/ui")


def test_dashboard_shows_a_pool_and_follows_a_revocation_live(vault_server, pool, browser):
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool, quota_limit=100)
    vault.deposit(pool, [{"id": f"t{i}", "secret": f"ui-{i}"} for i in range(3)])
    lease = vault.lease(pool)

    browser.get(vault_server.url + "/ui")
    # A token the vault does not accept is refused on the page.
    type_into(browser, "#token", "not-a-token")
    click(browser, "#signin")
    wait_text(browser, "#signin-err", lambda t: "not accepted" in t)

    type_into(browser, "#token", vault_server.admin)
    click(browser, "#signin")
    row = f'tr[data-pool="{pool}"]'
    wait_for(browser, f'{row} [data-state="active"][data-count="2"]')
    wait_for(browser, f'{row} [data-state="leased"][data-count="1"]')
    wait_text(browser, "#live-text", lambda t: t == "events: live")
    # Everything after this happens without a reload.
    browser.execute_script("window.__same_page = 42")

    vault.revoke(pool, lease.token_id, reason="leaked in a log")
    wait_for(browser, f'{row} [data-state="revoked"][data-count="1"]')
    wait_for(browser, f'{row} [data-state="leased"][data-count="0"], '
                      f'{row}:not(:has([data-state="leased"]))')
    wait_text(browser, '#events li[data-event="token.revoked"]',
              lambda t: pool in t and lease.token_id in t)

    # An admin freezes the pool from its button; the vault says so and so does the page.
    click(browser, f'{row} button[data-action="freeze"]')
    until(browser, expected_conditions.alert_is_present()).accept()
    wait_for(browser, f'{row} [data-frozen="1"]')
    assert vault.pool_status(pool)["frozen"] is True
    wait_for(browser, '#events li[data-event="pool.frozen"]')

    # The token list, with a revoke button per live token.
    click(browser, row)
    wait_for(browser, f'tr[data-tokens-of="{pool}"] button[data-revoke]')
    assert browser.execute_script("return window.__same_page") == 42
    shot = os.environ.get("TV_UI_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)
    vault.close()


def test_dashboard_shows_every_quota(vault_server, pool, browser):
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool, cost_estimates={"llm_tokens": 500}, quotas=[
        {"name": "rpm", "limit": 10, "window_s": 60},
        {"name": "tpm", "limit": 1000, "window_s": 60, "cost": "llm_tokens"},
    ])
    vault.deposit(pool, [{"id": "k1", "secret": "ui-quota"}])
    with vault.lease(pool) as lease:
        lease.release(lease.report(costs={"llm_tokens": 1000}))
    # tpm is spent: the next lease is refused for it, which makes it the binding quota.
    try:
        vault.lease(pool)
    except Exception as e:
        assert type(e).__name__ == "PoolExhausted", e

    browser.get(vault_server.url + "/ui")
    type_into(browser, "#token", vault_server.admin)
    click(browser, "#signin")
    row = f'tr[data-pool="{pool}"]'
    wait_text(browser, f'{row} [data-field="quotas"]',
              lambda t: "rpm 10%" in t and "tpm 100%" in t)
    wait_for(browser, f'{row} [data-binding="tpm"]')
    click(browser, row)
    wait_text(browser, f'tr[data-tokens-of="{pool}"] [data-field="quota"]',
              lambda t: "rpm 1 / 10" in t and "tpm 1000 / 1000" in t)
    vault.close()


def test_dashboard_shows_pipelines_and_one_under_strength(vault_server, pool, browser):
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool)
    vault.deposit(pool, [{"id": f"k{i}", "secret": f"ui-pipe-{i}"} for i in range(3)])
    vault.put_pipeline(pool, "crawl", tokens=2, duration_s=600)
    vault.put_pipeline(pool, "big", tokens=3, duration_s=600, allow_partial=True)

    browser.get(vault_server.url + "/ui")
    type_into(browser, "#token", vault_server.admin)
    click(browser, "#signin")
    row = f'tr[data-pool="{pool}"]'
    wait_text(browser, f'{row} [data-field="pipelines"]',
              lambda t: "crawl 2/2" in t and "big 1/3" in t)
    wait_for(browser, f'{row} [data-under-strength="big"]')
    vault.close()


def test_dashboard_shows_the_rotation_calendar(vault_server, pool, browser):
    vault = Vault(vault_server.url, vault_server.admin)
    # Rotated every 3 days: the tokens deposited now are due within the week.
    vault.put_pool(pool, rotation={"max_age_s": 3 * 86400, "overlap_s": 3600})
    vault.deposit(pool, [{"id": f"r{i}", "secret": f"ui-rot-{i}"} for i in range(4)])

    browser.get(vault_server.url + "/ui")
    type_into(browser, "#token", vault_server.admin)
    click(browser, "#signin")
    wait_text(browser, f'tr[data-pool="{pool}"] [data-field="rotation"]',
              lambda t: t == "0 rotating, 0 waiting, 4 due in 7 days")
    vault.close()


def test_the_api_reference_shows_the_lease_operation_and_its_problem_codes(vault_server, browser):
    """GET /docs: the reference page, built from /openapi.json with its assets served by the
    vault itself (nothing from a CDN), lists the lease operation; opened, it shows its answers
    with their problem codes."""
    with urllib.request.urlopen(vault_server.url + "/docs/") as r:
        page = r.read().decode()
    assert "http://" not in page and "https://" not in page
    browser.get(vault_server.url + "/docs")
    lease_op = "#operations-leases-leases_acquire"
    wait_for(browser, lease_op)
    text = wait_text(browser, lease_op + " .opblock-summary-path", lambda t: t != "")
    assert text.replace("\u200b", "") == "/v1/pools/{pool}/leases"
    click(browser, lease_op + " .opblock-summary-control")
    answers = wait_text(browser, lease_op + " .responses-table",
                        lambda t: "pool_exhausted" in t)
    for code in ("201", "423", "503", "pool_frozen", "Retry-After"):
        assert code in answers, answers
