"""Single sign-on in a real browser: headless Chromium logs in to the dashboard (uvicorn,
`medseg dashboard`) through a real OpenID Connect provider started on 127.0.0.1
(oauth2-mock-server under node, tests/support/oidc.py). The provider's issuer is
``localhost``, the dashboard ``127.0.0.1``: two sites, so the SameSite=Strict cookie is really
left off the provider's redirect back, as in a hospital."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_operator_stack import _chrome
from tests.support.oidc import Provider, provider
from worker.devtools.localstack import free_port, start_medseg, stop, wait_for_port

pytestmark = pytest.mark.integration

ROLE_MAP = {"radiologists": "reviewer", "it-ops": "operator", "pacs-admins": "admin"}


@dataclass
class SsoStack:
    root: Path
    env: dict[str, str]
    url: str
    idp: Provider


def _medseg(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SsoStack]:
    root = tmp_path_factory.mktemp("sso")
    with provider(root, host="localhost") as idp:
        port = free_port()
        env = {
            "MEDSEG_DATA_DIR": str(root / "data"),
            "MEDSEG_BROKER_URL": "redis://127.0.0.1:1/0",
            "MEDSEG_OIDC_ISSUER": idp.issuer,
            "MEDSEG_OIDC_CLIENT_ID": "medseg-dashboard",
            "MEDSEG_OIDC_CLIENT_SECRET": "dashboard secret",
            "MEDSEG_OIDC_ROLE_MAP": json.dumps(ROLE_MAP),
            "MEDSEG_OIDC_LABEL": "Hospital ID",
        }
        assert _medseg(env, "db", "upgrade").returncode == 0
        dashboard = start_medseg(["dashboard", "--port", str(port)], env, root / "dashboard.log")
        try:
            wait_for_port(port, process=dashboard)
            yield SsoStack(root, env, f"http://127.0.0.1:{port}", idp)
        finally:
            stop(dashboard)


def test_single_sign_on_in_headless_chromium(sso: SsoStack, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome(tmp_path)
    wait = WebDriverWait(driver, 20)
    try:
        # A radiologist: reviewer, named in the header, an oidc account in the database.
        sso.idp.sign_in_as(preferred_username="rita", groups=["staff", "radiologists"])
        driver.get(sso.url + "/login")
        assert "Sign in with Hospital ID" in driver.find_element(By.ID, "sso-login").text
        driver.find_element(By.ID, "sso-login").click()
        wait.until(expected_conditions.url_to_be(sso.url + "/"))
        assert driver.find_element(By.ID, "who").text == "rita (reviewer)"
        driver.get(sso.url + "/jobs")
        assert "rita (reviewer)" in driver.find_element(By.ID, "who").text
        listed = _medseg(sso.env, "users", "list").stdout
        assert any(
            line.split()[:4] == ["rita", "reviewer", "oidc", "enabled"]
            for line in listed.splitlines()
        ), listed

        # Disabled by an admin: the open session ends at the next page, a new sign-in is refused.
        done = _medseg(sso.env, "users", "disable", "rita", "--user", "root-admin")
        assert done.returncode == 0, done.stderr
        driver.get(sso.url + "/jobs")
        wait.until(expected_conditions.url_to_be(sso.url + "/login"))
        driver.find_element(By.ID, "sso-login").click()
        wait.until(expected_conditions.url_contains("/auth/complete"))
        assert "rita is disabled" in driver.page_source

        # No mapped group: no login.
        driver.delete_all_cookies()
        sso.idp.sign_in_as(preferred_username="visitor", groups=["staff"])
        driver.get(sso.url + "/login")
        driver.find_element(By.ID, "sso-login").click()
        wait.until(expected_conditions.url_contains("/auth/complete"))
        assert "visitor has no role here" in driver.page_source
        driver.get(sso.url + "/")
        wait.until(expected_conditions.url_to_be(sso.url + "/login"))

        # An admin of the IdP's: the highest role matched wins.
        sso.idp.sign_in_as(preferred_username="ada", groups=["it-ops", "pacs-admins"])
        driver.find_element(By.ID, "sso-login").click()
        wait.until(expected_conditions.url_to_be(sso.url + "/"))
        assert driver.find_element(By.ID, "who").text == "ada (admin)"
    except Exception:
        (tmp_path / "page.html").write_text(driver.page_source)
        print((sso.root / "dashboard.log").read_text()[-3000:])
        print((sso.root / "provider.log").read_text()[-2000:])
        raise
    finally:
        driver.quit()
