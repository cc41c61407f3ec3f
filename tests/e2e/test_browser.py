"""The status page and the HR view driven in headless Chromium (Debian `chromium`).

`jml serve` runs as a process against scim2-server; Chromium is driven over the Chrome
DevTools Protocol with aiohttp's websocket client (no Selenium). A person signs in, finds
someone, offboards them and watches every connector reach "verified"; the status page then
shows a missed deadline, a held plan (approved with its button) and the duration plot.
Screenshots land in test-artifacts/browser/ (install Chromium with tests/e2e/ensure_chromium.sh).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.helpers import http, person, scim_users, start_serve, wait_until, write_config, write_export
from tests.peers import ScimPeer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
ADMIN_TOKEN = "e2e-admin-" + "x7Q2pLw9vR4mZ8kT1nB6"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One headless Chromium tab over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            doc = json.loads(msg.data)
            fut = self._pending.pop(doc.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(doc)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        doc = await asyncio.wait_for(fut, 30)
        if "error" in doc:
            raise AssertionError(f"{method}: {doc['error']}")
        result: dict[str, Any] = doc.get("result", {})
        return result

    async def js(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"JS failed: {expression}\n{r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):  # mid-navigation: the context is being replaced
                last = await self.js(expression)
                if last:
                    return last
            await asyncio.sleep(0.2)
        text = await self.js("document.body ? document.body.innerText.slice(0, 3000) : ''")
        raise AssertionError(f"timed out waiting for {what or expression} (last {last!r}); page:\n{text}")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.loaded()

    async def loaded(self) -> None:
        await asyncio.sleep(0.15)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", 15,
                            "the page to load")

    async def fill(self, selector: str, value: str) -> None:
        ok = await self.js(f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
                           f" if (!el) return false; el.value = {json.dumps(value)}; return true; }})()")
        assert ok, f"no element {selector}"

    async def click(self, selector: str) -> None:
        ok = await self.js(f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
                           " if (!el) return false; el.click(); return true; })()")
        assert ok, f"no element {selector}"
        await self.loaded()

    async def text(self, selector: str = "body") -> str:
        return str(await self.js(f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText"))

    async def path(self) -> str:
        return str(await self.js("location.pathname + location.search"))

    async def screenshot(self, name: str) -> Path:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": 1366, "height": min(float(size["height"]), 4000),
                                     "scale": 1})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None, "Chromium is missing: `make test` installs it (tests/e2e/ensure_chromium.sh)"
    profile = Path(tempfile.mkdtemp(prefix="jml-chromium-"))
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", "--window-size=1366,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json(content_type=None)
            page = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                b = Browser(ws)
                await b.send("Page.enable")
                await b.send("Emulation.setDeviceMetricsOverride", width=1366, height=900, deviceScaleFactor=1,
                             mobile=False)
                try:
                    yield b
                finally:
                    b._reader.cancel()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _status(url: str) -> dict[str, Any]:
    code, body = http(url + "api/v1/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert code == 200, body[:300]
    doc: dict[str, Any] = json.loads(body)
    return doc


def _progress(url: str, eid: str) -> dict[str, Any]:
    code, body = http(f"{url}api/v1/people/{eid}/progress", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert code == 200, body[:300]
    doc: dict[str, Any] = json.loads(body)
    return doc


def _wait_verified(url: str, *eids: str, timeout: float = 90.0) -> None:
    """Every connector of every one of `eids` verified deprovisioned (the progress API)."""
    last: dict[str, Any] = {}

    def done() -> bool:
        for eid in eids:
            last[eid] = _progress(url, eid)
        return all(d["all_verified"] for d in last.values())

    try:
        wait_until(done, timeout, 0.5, f"{', '.join(eids)} verified")
    except AssertionError as e:
        raise AssertionError(f"{e}\nprogress: {json.dumps(last, indent=1)}\nstatus: {_status(url)}") from None


ALL_VERIFIED_JS = """(() => {
  const cells = [...document.querySelectorAll('#progress tbody .countdown')];
  return cells.length > 0 && cells.every(c => c.textContent.trim() === 'verified');
})()"""


async def test_sign_in_find_offboard_watch_verified_and_status_page(scim: ScimPeer, tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    people = [person(i) for i in range(1, 7)]
    people[2].update(first_name="Grace", preferred_name="Grace", last_name="Hopper",
                     work_email="grace.hopper@example.com")
    write_export(exports, "export-1.csv", people)
    cfg = write_config(tmp_path, scim_url=scim.url, extra={"sla": {"deprovision": "10m"}})
    env = {"SCIM_TOKEN": scim.token, "JML_ADMIN_TOKEN": ADMIN_TOKEN}
    with start_serve(cfg, env=env) as served:
        served.wait_ready()
        url = served.url
        wait_until(lambda: len(scim_users(scim.url, scim.token)) == 6, 30, what="six accounts in the app")
        async with chromium() as b:
            # -- sign in
            await b.goto(url)
            assert (await b.path()).startswith("/login")
            await b.screenshot("01-login")
            await b.fill("#token", "wrong token")
            await b.click("button[type=submit]")
            assert "That is not the admin token" in await b.text()
            await b.fill("#token", ADMIN_TOKEN)
            await b.click("button[type=submit]")
            assert await b.path() == "/"
            status_text = await b.text()
            assert "Leavers in flight" in status_text and "no leavers yet" in status_text
            assert await b.js("document.cookie") == ""  # the session cookie is HttpOnly

            # -- find a person and see their access
            await b.click("header nav a[href='/people']")
            await b.fill("input[name=q]", "hopper")
            await b.click("form.search button")
            results = await b.text("table.results")
            assert "Grace Hopper" in results and "grace.hopper@example.com" in results
            await b.click("table.results a")
            assert await b.path() == "/people/E0000003"
            access = await b.text("#access")
            assert "All Staff" in access and "everyone" in access and "grace.hopper@example.com" in access
            await b.screenshot("02-person")

            # -- offboard, with the confirmation step
            await b.fill("#reason", "Resigned; last day today (HR-4711)")
            await b.click("#offboard-form button")
            confirm = await b.text("#confirm")
            assert "Offboard now?" in confirm and "demo" in confirm and "HR-4711" in confirm
            await b.screenshot("03-confirm")
            await b.click("#confirm-offboard")
            assert await b.path() == "/people/E0000003?done=offboarded"
            first = await b.text("#progress")
            assert "demo" in first
            assert any(w in first for w in ("left", "verified")), first  # a live countdown, or already done
            await b.wait_for(ALL_VERIFIED_JS, 60, "every connector to show 'verified'")
            assert "access removed everywhere" in await b.text("#progress")
            # The access table follows the deprovisioning and still shows what was removed (issue 17).
            await b.wait_for("[...document.querySelectorAll('#access s.removed')].some(e => "
                             "e.innerText.includes('All Staff'))", 10, "the access table to follow the deprovisioning")
            assert "Offboard now" not in await b.text()
            await b.screenshot("04-verified")
            assert not any(u.get("active", True) for u in scim_users(scim.url, scim.token)
                           if u.get("externalId") == "E0000003")

            # -- a leaver HR reported an hour late: the deadline was missed
            late = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
            code, body = http(url + "api/v1/offboard", method="POST",
                              data=json.dumps({"employee_id": "E0000002", "reason": "terminated last hour",
                                               "at": late}).encode(),
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
            assert code == 202, body
            _wait_verified(url, "E0000002")

            # -- an export that would remove a third of the accounts: held by the guard
            people[4].update(status="Terminated", termination_date=dt.date.today().isoformat())
            people[5].update(status="Terminated", termination_date=dt.date.today().isoformat())
            write_export(exports, "export-2.csv", people)
            held = wait_until(lambda: _status(url)["held_plans"], 30, what="a held plan")
            plan_id = held[0]["plan_id"]

            await b.click("header nav a[href='/']")
            await b.wait_for(f"document.querySelector('[data-plan=\"{plan_id}\"]') !== null", 15, "the held plan")
            page = await b.text()
            assert "BREACHED" in page or "late" in await b.text("#breaches")
            breaches = await b.text("#breaches")
            assert "First2" in breaches and "late" in breaches
            held_text = await b.text("#held")
            assert f"Approve plan {plan_id}" in held_text and "%" in held_text
            # Verified leavers leave "Leavers in flight" for "Verified in the last hour" (issue 17).
            assert "Grace Hopper" in await b.text("#verified") and "verified" in await b.text("#verified")
            assert "Grace Hopper" not in await b.text("#leavers")
            assert await b.js("document.querySelectorAll('#durations svg rect.bar').length") >= 2
            assert await b.js("document.querySelectorAll('#durations svg rect.bar.late').length") >= 1
            await b.screenshot("05-status-held-breach")

            # -- the live refresh keeps the page current without a reload
            marker = await b.js("window.__jml_marker = 1")
            assert marker == 1
            before = await b.text("#updated")
            await b.wait_for(f"document.getElementById('updated').textContent !== {json.dumps(before)}", 15,
                             "the live refresh")
            assert await b.js("window.__jml_marker") == 1  # same document: refreshed in place

            # -- approve the held plan with its button
            await b.click(f"[data-plan=\"{plan_id}\"] form.approve button")
            assert (await b.path()).startswith("/?approved=")
            assert f"Plan {plan_id} approved" in await b.text()
            assert plan_id not in await b.text("#held")
            _wait_verified(url, "E0000005", "E0000006")
            await b.goto(url)
            await b.wait_for("document.querySelectorAll('#verified .countdown.ok').length >= 4", 20,
                             "four verified leavers on the status page")
            await b.screenshot("06-status-after-approve")

            # -- sign out
            await b.click("form.logout button")
            assert (await b.path()).startswith("/login")
            await b.goto(url)
            assert (await b.path()).startswith("/login")
        logs = served.logs()
        assert ADMIN_TOKEN not in logs
        assert served.stop() == 0
    assert os.listdir(ARTIFACTS)
