"""The web console in a real browser (Debian's headless Chromium, driven by Selenium),
against a stack started with `snapdeploy up`: login, the instances, a VM's snapshot tree,
a deploy from a snapshot that is not the current one followed live until Running, and the
error paths. A screenshot of each page is saved under the test's temporary folder."""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cs import CloudStack
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.helpers import snapshot, vm_named
from tests.harness.vsphere import Vcsim

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (make install)"),
]

SOURCE_VM = "DC0_C0_RP0_VM0"
USER_B = "console-user-b"
PASSWORD_B = "b-secret-Passw0rd"
# Where the README's screenshot comes from, when asked (SNAPDEPLOY_CONSOLE_PNG=<path>).
README_SHOT = "SNAPDEPLOY_CONSOLE_PNG"


# --- the browser ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-screenshots")


@pytest.fixture(scope="module")
def base(stack: dict[str, Any]) -> str:
    return str(stack["api_url"]).removesuffix("api")


def wait(driver: WebDriver, timeout: float = 20) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout, poll_frequency=0.2)


def on_page(driver: WebDriver) -> str:
    """What the page shows (for a failure's message)."""
    return str(driver.execute_script(
        "const d = document.querySelector('dialog[open]');"
        "return (d ? d.innerText + '\\n---\\n' : '') + document.body.innerText"))[:3000]


def visible(driver: WebDriver, css: str, timeout: float = 20) -> WebElement:
    try:
        return wait(driver, timeout).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    except TimeoutException:
        raise AssertionError(f"{css} not shown in {timeout}s; the page: {on_page(driver)}") \
            from None


def text_in(driver: WebDriver, css: str, text: str, timeout: float = 20) -> None:
    try:
        wait(driver, timeout).until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    except TimeoutException:
        raise AssertionError(f"{text!r} not in {css} in {timeout}s; the page: "
                             f"{on_page(driver)}") from None


def shoot(driver: WebDriver, shots: Path, name: str) -> None:
    driver.save_screenshot(str(shots / f"{name}.png"))


def unlabelled(driver: WebDriver) -> list[str]:
    """The visible form controls that have neither a label nor an aria-label."""
    found: list[str] = driver.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter(el => el.offsetParent !== null || el.closest('dialog[open]'))
          .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
          .map(el => el.id || el.name || el.outerHTML.slice(0, 60));""")
    return found


def go(driver: WebDriver, base: str, page: str, ready: str) -> None:
    driver.get(f"{base}#/{page}")
    visible(driver, ready)


def log_in(driver: WebDriver, base: str, username: str, password: str) -> None:
    driver.get(base)
    driver.execute_script("localStorage.clear()")
    driver.delete_all_cookies()
    driver.get(base + "#/login")
    visible(driver, "#login-form")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()


def log_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    visible(driver, "#login-form")


# --- the API's own login, as any client uses it ---------------------------------------------

def call(opener: urllib.request.OpenerDirector, url: str,
         **params: str) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode({"response": "json", **params}).encode()
    try:
        with opener.open(url, data=data, timeout=30) as answer:
            return int(answer.status), dict(json.loads(answer.read()))
    except urllib.error.HTTPError as refused:
        return refused.code, dict(json.loads(refused.read()))


def test_login_opens_a_session_any_client_can_use_and_logout_ends_it(
        stack: dict[str, Any]) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    url = stack["api_url"]
    status, wrong = call(opener, url, command="login", username="admin", password="wrong")
    assert status == 401
    assert wrong["loginresponse"]["errortext"] == (
        "Failed to authenticate user admin in domain ROOT; please provide valid credentials")
    status, answer = call(opener, url, command="login", username="admin",
                          password=stack["admin_password"], domain="/")
    assert status == 200, answer
    login = answer["loginresponse"]
    assert login["username"] == "admin" and login["account"] == "admin" and login["type"] == 1
    assert {c.name for c in jar} == {"JSESSIONID", "sessionkey"}
    key = login["sessionkey"]
    status, zones = call(opener, url, command="listZones", sessionkey=key)
    assert status == 200 and zones["listzonesresponse"]["count"] >= 1
    status, _ = call(opener, url, command="listZones", sessionkey="not-the-key")
    assert status == 401
    bare = urllib.request.build_opener()  # the key without the session's cookie
    assert call(bare, url, command="listZones", sessionkey=key)[0] == 401
    assert call(opener, url, command="logout")[0] == 200
    status, ended = call(opener, url, command="listZones", sessionkey=key)
    assert status == 401, ended


# --- the console ----------------------------------------------------------------------------

def test_a_wrong_password_shows_a_clear_message(browser: WebDriver, base: str,
                                                shots: Path) -> None:
    log_in(browser, base, "admin", "not-the-password")
    text_in(browser, "#login-error", "Wrong username or password")
    assert "please provide valid credentials" in browser.find_element(By.ID, "login-error").text
    assert unlabelled(browser) == []
    shoot(browser, shots, "login-refused")


def test_deploy_from_a_snapshot_that_is_not_the_current_one(
        browser: WebDriver, base: str, shots: Path, stack: dict[str, Any],
        cloud: CloudStack) -> None:
    source = vm_named(cloud, SOURCE_VM)
    older = snapshot(cloud, source["id"], "console-a")
    snapshot(cloud, source["id"], "console-b")  # now the current one

    log_in(browser, base, "admin", stack["admin_password"])
    visible(browser, "#instances")
    assert unlabelled(browser) == []
    browser.find_element(By.ID, "filter").send_keys(SOURCE_VM)
    shoot(browser, shots, "instances")
    browser.find_element(By.LINK_TEXT, SOURCE_VM).click()
    text_in(browser, "#page-title", f"Instance {SOURCE_VM}")
    visible(browser, "#vm-volumes")
    shoot(browser, shots, "instance")

    browser.find_element(By.ID, "open-snapshots").click()
    visible(browser, "#snapshot-tree")
    current = browser.find_element(By.CSS_SELECTOR, '[data-snapshot="console-b"]')
    assert "current" in current.text
    browser.find_element(By.CSS_SELECTOR, '[data-snapshot="console-a"]').click()
    text_in(browser, "#snapshot-title", "console-a")
    shoot(browser, shots, "snapshot-tree")

    browser.find_element(By.ID, "deploy-from-snapshot").click()
    offering = visible(browser, "#deploy-offering")
    assert unlabelled(browser) == []
    name = browser.find_element(By.ID, "deploy-name").get_attribute("value")
    assert name == "DC0-C0-RP0-VM0-console-a-copy"
    # An offering with other CPUs than the snapshot's cannot be chosen, and says why.
    choice = Select(offering)
    large = next(o for o in choice.options if o.text.startswith("Large Instance"))
    assert not large.is_enabled()
    with pytest.raises(NotImplementedError, match="disabled"):
        choice.select_by_visible_text(large.text)
    reason = browser.find_element(By.CSS_SELECTOR, '[data-offering="Large Instance"]').text
    assert "invalid parameter serviceofferingid" in reason and "CPU" in reason, reason
    choice.select_by_visible_text(next(o.text for o in choice.options
                                       if o.text.startswith("Small Instance")))
    hosts = Select(browser.find_element(By.ID, "deploy-host")).options
    assert len(hosts) >= 2  # "any host" and the hosts reaching the snapshot's pool
    shoot(browser, shots, "deploy-dialog")
    if os.environ.get(README_SHOT):
        browser.save_screenshot(os.environ[README_SHOT])

    browser.find_element(By.ID, "dialog-submit").click()
    text_in(browser, "#deploy-status", "Running", timeout=120)
    steps = browser.find_element(By.ID, "deploy-steps").text
    for step in ("Deploy requested", "Placed on host", "VM powered on"):
        assert step in steps, steps
    shoot(browser, shots, "deploy-running")
    assert vm_named(cloud, name)["vmsnapshotid"] == older

    browser.find_element(By.ID, "deploy-close").click()
    go(browser, base, "instances", "#instances")
    row = browser.find_element(By.XPATH, f'//table[@id="instances"]//tr[td/a[text()="{name}"]]')
    assert "Running" in row.text


def test_a_failed_deploy_shows_error_with_the_reason(
        browser: WebDriver, base: str, shots: Path, cloud: CloudStack, vcsim: Vcsim) -> None:
    source = vm_named(cloud, SOURCE_VM)
    go(browser, base, f"instances/{source['id']}/snapshots", "#snapshot-tree")
    browser.find_element(By.CSS_SELECTOR, '[data-snapshot="console-b"]').click()
    browser.find_element(By.ID, "deploy-from-snapshot").click()
    name_box = visible(browser, "#deploy-name")
    name_box.clear()
    name_box.send_keys("console-doomed")
    vcsim.fail("ReconfigVM_Task", "injected: the host refused the new configuration")
    try:
        browser.find_element(By.ID, "dialog-submit").click()
        text_in(browser, "#deploy-status", "Error", timeout=120)
    finally:
        vcsim.clear_faults()
    detail = browser.find_element(By.ID, "deploy-detail").text
    assert "injected" in detail and "reconfigure" in detail, detail
    shoot(browser, shots, "deploy-error")
    browser.find_element(By.ID, "deploy-close").click()
    cloud.destroyVirtualMachine(id=vm_named(cloud, "console-doomed")["id"], expunge="true")


def test_snapshot_actions_take_template_volume_revert_delete(
        browser: WebDriver, base: str, shots: Path, cloud: CloudStack) -> None:
    source = vm_named(cloud, SOURCE_VM)
    go(browser, base, f"instances/{source['id']}/snapshots", "#snapshot-tree")

    def act(snapshot_name: str, button: str, done: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f'[data-snapshot="{snapshot_name}"]').click()
        browser.find_element(By.ID, button).click()
        visible(browser, "#dialog-submit")
        assert unlabelled(browser) == []
        browser.find_element(By.ID, "dialog-submit").click()
        text_in(browser, "#flash", done, timeout=60)

    browser.find_element(By.ID, "take-snapshot").click()
    name_box = visible(browser, "#snapshot-name")
    name_box.clear()
    name_box.send_keys("console-c")
    browser.find_element(By.ID, "dialog-submit").click()
    visible(browser, '[data-snapshot="console-c"]', timeout=60)
    act("console-c", "create-template", "is ready")
    assert any(t["vmsnapshotid"] == _snapshot_id(cloud, source["id"], "console-c")
               for t in cloud.listTemplates(templatefilter="all")["template"])
    act("console-c", "create-volume", "was created")
    assert cloud.listVolumes(name=f"{SOURCE_VM}-console-c-volume")["count"] == 1
    act("console-a", "revert-snapshot", "was reverted")
    assert "current" in browser.find_element(By.CSS_SELECTOR, '[data-snapshot="console-a"]').text
    shoot(browser, shots, "snapshot-actions")
    act("console-c", "delete-snapshot", "was deleted")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-snapshot="console-c"]')


def _snapshot_id(cloud: CloudStack, vm_id: str, name: str) -> str:
    return str(next(s["id"] for s in cloud.listVMSnapshot(virtualmachineid=vm_id)["vmSnapshot"]
                    if s["name"] == name))


@pytest.mark.parametrize("page, ready", [
    ("templates", "#templates"), ("volumes", "#volumes"), ("jobs", "#jobs"),
    ("events", "#events tbody tr"), ("infrastructure", "#pools"), ("accounts", "#accounts"),
])
def test_every_page_shows_with_labelled_controls(browser: WebDriver, base: str, shots: Path,
                                                 page: str, ready: str) -> None:
    go(browser, base, page, ready)
    assert unlabelled(browser) == []
    shoot(browser, shots, page)


def test_narrow_screens_scroll_tables_not_the_page(browser: WebDriver, base: str,
                                                   shots: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        go(browser, base, "instances", "#instances")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1
        shoot(browser, shots, "instances-narrow")
    finally:
        browser.set_window_size(1280, 800)


def test_another_users_console_shows_none_of_the_admins_objects(
        browser: WebDriver, base: str, shots: Path, cloud: CloudStack) -> None:
    cloud.createAccount(username=USER_B, password=PASSWORD_B, email="b@example.com",
                        firstname="B", lastname="User")
    source = vm_named(cloud, SOURCE_VM)
    log_out(browser)
    log_in(browser, base, USER_B, PASSWORD_B)
    text_in(browser, "#instances", "No instances.")
    assert "admin" not in browser.find_element(By.ID, "who").text
    for page, css, empty in (("templates", "#templates", "No templates"),
                             ("volumes", "#volumes", "No volumes."),
                             ("jobs", "#jobs", "No jobs.")):
        go(browser, base, page, css)
        text_in(browser, css, empty)
    go(browser, base, "accounts", "#accounts")
    assert [r.text.split()[0] for r in browser.find_elements(
        By.CSS_SELECTOR, "#accounts tbody tr")] == [USER_B]
    assert not browser.find_element(By.CSS_SELECTOR, 'a[data-page="infrastructure"]') \
        .is_displayed()
    go(browser, base, f"instances/{source['id']}/snapshots", "#page-error")
    assert "visible" in browser.find_element(By.ID, "page-error").text
    shoot(browser, shots, "user-b")
    log_out(browser)


def test_screenshots_were_saved(shots: Path) -> None:
    saved = {p.stem for p in shots.glob("*.png")}
    assert {"login-refused", "instances", "instance", "snapshot-tree", "deploy-dialog",
            "deploy-running", "deploy-error", "events", "infrastructure"} <= saved
