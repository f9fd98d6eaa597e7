"""The hub's web dashboard as an operator meets it: a real headless Chromium loads the page of a
daemon started with ``--dashboard-port``, sees the agents and topics, picks a topic and gets its
latents drawn; the HTTP side refuses what it must (401 without an admin token, nothing leaked)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import latentwire
import numpy as np
import pytest
from latentwire.hub.auth import AuthFile, Policy, hash_token
from latentwire.hub.dashboard import Dashboard
from latentwire.hub.server import serve

pytestmark = pytest.mark.timeout(120)

TOKENS = {"ops": "ops-secret", "camera": "camera-secret", "viewer": "viewer-secret"}
HASHES = {agent: hash_token(token, n=1024) for agent, token in TOKENS.items()}  # cheap scrypt for tests
# Where the browser test also saves its screenshot (the README's docs/dashboard.png is made so).
SCREENSHOT_ENV = "LATENTWIRE_DASHBOARD_SCREENSHOT"


def auth_agents() -> dict:
    return {"ops": {"token_hash": HASHES["ops"], "admin": True},
            "camera": {"token_hash": HASHES["camera"], "publish": ["cams/#", "status"]},
            "viewer": {"token_hash": HASHES["viewer"], "subscribe": ["cams/#"]}}


def pattern(step: int, rows: int = 32, cols: int = 64) -> np.ndarray:
    """A smooth latent that moves with ``step`` (many distinct values: a heatmap, not a blank)."""
    r, c = np.arange(rows)[:, None], np.arange(cols)[None, :]
    return (np.sin(r / 5 + step / 3) + np.cos(c / 9 - step / 4)).astype(np.float32)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """Status, headers and body of a GET that follows no redirect."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


@pytest.fixture
async def dashboard():
    """A hub with a dashboard (in this process), and the dashboard's base URL."""
    server = await serve(port=0)
    board = Dashboard(server.hub, interval=0.1)
    port = await board.start(0)
    yield server, f"http://127.0.0.1:{port}"
    await board.stop()
    await server.stop(grace=0.5)


async def read_events(base: str, path: str, until: str, timeout: float = 10) -> str:
    """Read the event stream at ``path`` until ``until`` appears in it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: dashboard\r\n\r\n".encode())
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while until.encode() not in data:
                chunk = await reader.read(65536)
                assert chunk, data.decode()[-500:]
                data += chunk
    finally:
        writer.close()
    return data.decode()


async def test_state_and_latents_stream_to_the_page(dashboard) -> None:
    server, base = dashboard
    async with latentwire.connect(server.url, agent="camera") as camera, \
            latentwire.connect(server.url, agent="viewer") as viewer:
        await viewer.subscribe("cams/#")
        await camera.publish("cams/front", "warming up")
        status, headers, page = await asyncio.to_thread(http_get, base + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html") and "<canvas" not in page
        assert "EventSource" in page and "default-src 'none'" in headers["Content-Security-Policy"]
        state = json.loads((await asyncio.to_thread(http_get, base + "/api/state"))[2])
        assert {s["agent"] for s in state["sessions"]} == {"camera", "viewer"}
        assert [t["topic"] for t in state["topics"]] == ["cams/front"]

        async def publish() -> None:
            for step in range(40):
                await camera.publish("cams/front", latent=pattern(step), wait=False)
                await asyncio.sleep(0.05)

        publisher = asyncio.create_task(publish())
        text = await read_events(base, "/events?topic=cams/%2B", "event: latents")
        publisher.cancel()
        assert "event: state" in text
        data = json.loads(text.split("event: latents\ndata: ", 1)[1].split("\n", 1)[0])
        latent = data["latents"][0]
        assert data["topic"] == "cams/+" and latent["sender"] == "camera" and latent["shape"] == [32, 64]
        assert (latent["rows"], latent["cols"]) == (32, 64) and latent["dtype"] == "float32"
        # Once the stream is gone, nothing is kept for the topic any more.
        await asyncio.sleep(0.3)
        assert not server.hub.traffic._watches
        recent = json.loads((await asyncio.to_thread(http_get, base + "/api/recent?filter=cams/%23&limit=2"))[2])
        assert len(recent) == 2 and recent[0]["kind"] == "tensor" and "cells" not in recent[0]


async def test_an_authenticated_hub_refuses_the_page_without_an_admin_token(dashboard) -> None:
    server, base = dashboard
    server.hub.policy = Policy(AuthFile.model_validate({"agents": auth_agents()}))
    async with latentwire.connect(server.url, agent="camera", token=TOKENS["camera"]) as camera:
        await camera.publish("cams/secret-project", "x")
        for path, headers in [("/", {}), ("/api/state", {}), ("/events", {}), ("/api/recent", {}),
                              ("/?token=wrong", {}), ("/", {"Authorization": f"Bearer {TOKENS['camera']}"}),
                              ("/api/state", {"Cookie": "latentwire_dashboard=made-up"})]:
            status, got, body = await asyncio.to_thread(http_get, base + path, headers)
            assert status == 401, (path, headers)
            assert got["WWW-Authenticate"] == "Bearer" and "admin = true" in body
            assert "camera" not in body and "secret-project" not in body and "Set-Cookie" not in got
        # The admin's token: as a header, or once in the address, which becomes a cookie.
        status, _, body = await asyncio.to_thread(http_get, base + "/api/state",
                                                  {"Authorization": f"Bearer {TOKENS['ops']}"})
        assert status == 200 and "secret-project" in body
        status, got, _ = await asyncio.to_thread(http_get, base + f"/?token={TOKENS['ops']}&topic=cams/x")
        assert status == 303 and got["Location"] == "/?topic=cams%2Fx"
        cookie = got["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKENS["ops"] not in cookie
        jar = {"Cookie": cookie.split(";", 1)[0]}
        assert (await asyncio.to_thread(http_get, base + "/", jar))[0] == 200
        assert (await asyncio.to_thread(http_get, base + "/api/state", jar))[0] == 200
        # Reloading the auth file ends every login.
        server.hub.policy = Policy(AuthFile.model_validate({"agents": auth_agents()}))
        assert (await asyncio.to_thread(http_get, base + "/api/state", jar))[0] == 401


async def test_bad_requests_get_one_line_answers(dashboard) -> None:
    _, base = dashboard
    port = int(base.rsplit(":", 1)[1])

    async def raw(request: bytes) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        try:
            return (await asyncio.wait_for(reader.read(), 10)).decode()
        finally:
            writer.close()

    assert (await raw(b"POST / HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 405 Method Not Allowed")
    assert (await raw(b"nonsense\r\n\r\n")).startswith("HTTP/1.1 400 Bad Request")
    huge = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await raw(huge)).startswith("HTTP/1.1 431")
    assert (await raw(b"GET /events?topic=a/%23/b HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 400")
    assert (await raw(b"GET /nowhere HTTP/1.1\r\n\r\n")).startswith("HTTP/1.1 404")


# -- a real browser ------------------------------------------------------------------------------


def browser_paths() -> tuple[str, str]:
    """Chromium and its driver; skips without them (fails under CI=true)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (Path("/usr/bin/chromedriver").is_file() and "/usr/bin/chromedriver")
    if not chromium or not driver:
        reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    pytest.importorskip("selenium")
    return chromium, driver


def start_daemon(*flags: str) -> tuple[subprocess.Popen, str, str]:
    """``latentwire hub --port 0 FLAGS...``: the process, its bus URL and its dashboard URL."""
    proc = subprocess.Popen([sys.executable, "-m", "latentwire.cli", "hub", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    urls: dict[str, str] = {}
    while len(urls) < 2:
        line = proc.stdout.readline()
        assert line, "the hub exited before it printed its URLs"
        if line.startswith("latentwire hub listening on "):
            urls["bus"] = line.rsplit(" ", 1)[1].strip()
        elif line.startswith("latentwire hub dashboard on "):
            urls["dashboard"] = line.rsplit(" ", 1)[1].strip()
    return proc, urls["bus"], urls["dashboard"]


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    return len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 24))


async def test_a_browser_sees_agents_topics_and_latent_heatmaps(tmp_path: Path) -> None:
    chromium, chromedriver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"agents": auth_agents()}))
    proc, url, board = start_daemon("--dashboard-port", "0", "--auth-file", str(auth))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = None
    try:
        # Without a token the page is refused.
        status, _, body = await asyncio.to_thread(http_get, board)
        assert status == 401 and "camera" not in body
        async with latentwire.connect(url, agent="camera", token=TOKENS["camera"]) as camera, \
                latentwire.connect(url, agent="viewer", token=TOKENS["viewer"]) as viewer:
            sub = await viewer.subscribe("cams/#")
            await camera.publish("cams/front", latent=pattern(0))
            await camera.publish("status", "camera online")
            await sub.receive(timeout=10)
            driver = await asyncio.to_thread(webdriver.Chrome, service=Service(chromedriver), options=options)
            driver.set_page_load_timeout(30)
            await asyncio.to_thread(driver.get, board)
            assert "401 Unauthorized" in driver.page_source and "cams/front" not in driver.page_source

            async def wait_for(what: str, find, timeout: float = 20):  # noqa: ANN001
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    found = await asyncio.to_thread(find)
                    if found:
                        return found
                    await asyncio.sleep(0.2)
                pytest.fail(f"the page never showed {what}:\n{driver.page_source[:3000]}")

            def cells(table: str) -> set[str]:
                return {td.text for td in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody td")}

            await asyncio.to_thread(driver.get, f"{board}?token={TOKENS['ops']}")
            assert "token" not in driver.current_url  # the redirect dropped it; a cookie keeps the login
            await wait_for("both agents", lambda: {"camera", "viewer"} <= cells("sessions"))
            await wait_for("the topic", lambda: {"cams/front", "status"} <= cells("topics"))
            row = driver.find_element(By.CSS_SELECTOR, '#topics tbody tr[data-topic="cams/front"]')
            await asyncio.to_thread(row.click)
            step = 0

            def heatmaps() -> list:
                return driver.find_elements(By.CSS_SELECTOR, "#latents canvas.heatmap")

            deadline = time.monotonic() + 30
            while len(await asyncio.to_thread(heatmaps)) < 6 and time.monotonic() < deadline:
                step += 1
                await camera.publish("cams/front", latent=latentwire.Latent(pattern(step), space="hub",
                                                                            family="gemma3"))
                await sub.receive(timeout=10)
                await asyncio.sleep(0.2)
            canvases = await asyncio.to_thread(heatmaps)
            assert len(canvases) >= 6, driver.page_source[:3000]
            caption = driver.find_element(By.CSS_SELECTOR, "#latents figcaption").text
            assert "camera" in caption and "float32[32×64]" in caption and "family gemma3" in caption
            assert "space hub" in caption and "norm" in caption
            assert driver.find_element(By.ID, "latents-title").text == "Latents on cams/front"
            await asyncio.sleep(1.2)  # one more state event, so the rates on the page are current
            png = await asyncio.to_thread(driver.get_screenshot_as_png)
            (tmp_path / "dashboard.png").write_bytes(png)
            heat = await asyncio.to_thread(lambda: canvases[0].screenshot_as_png)
            assert distinct_colours(heat) >= 64, "the heatmap canvas is (nearly) blank"
            if os.environ.get(SCREENSHOT_ENV):
                save_small(png, Path(os.environ[SCREENSHOT_ENV]))
    finally:
        if driver is not None:
            await asyncio.to_thread(driver.quit)
        proc.terminate()
        proc.wait(30)


def save_small(png: bytes, path: Path) -> None:
    """Save a screenshot as an 8-bit palette PNG (a fraction of the size, same look)."""
    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256).save(path, optimize=True)
