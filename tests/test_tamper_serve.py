"""`lightattn tamper serve`: the HTTP API over a real socket (no browser needed) and the page
in a real headless Chromium driven by Selenium (skipped when Chromium, chromedriver or
Selenium are missing). Set LIGHTATTN_SERVE_SCREENSHOT=path to keep the browser screenshot
(docs/tamper/serve.png is made that way)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightattn.cli import main
from lightattn.tamper import create_tamper_model

pytest.importorskip("fastapi", reason="fastapi not installed (needed by tamper serve)")
pytest.importorskip("uvicorn", reason="uvicorn not installed (needed by tamper serve)")
pytest.importorskip("multipart", reason="python-multipart not installed (needed by serve)")

from lightattn.tamper.serve import create_app  # noqa: E402

CASIA = Path(__file__).resolve().parents[1].parent / "shared/data/tamper/casia1-samples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def start_server(model: torch.nn.Module) -> Iterator[str]:
    """Serve `model` on a free localhost port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(model, model_kwargs={"width": 0.25}), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    torch.manual_seed(0)
    yield from start_server(create_tamper_model(width=0.25, inner="linear").eval())


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def post_file(url: str, name: str, data: bytes, field: str = "file") -> tuple[int, dict]:
    """POST one file as multipart/form-data; (status, JSON body)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "api/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def decode_png(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))


def test_page_and_health(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        page = r.read().decode()
    assert r.status == 200 and 'type="file"' in page and 'id="overlay"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    with urllib.request.urlopen(url + "api/health", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "ok", "model": {"width": 0.25}}


def test_predict_returns_overlay_mask_and_score(url):
    status, j = post_file(url, "photo.png", png_bytes(37, 53))
    assert status == 200, j
    assert (j["name"], j["width"], j["height"]) == ("photo.png", 53, 37)
    assert 0.0 <= j["score"] <= 1.0 and 0.0 <= j["tampered_fraction"] <= 1.0
    overlay, mask = decode_png(j["overlay"]), decode_png(j["mask"])
    assert overlay.mode == "RGB" and overlay.size == (53, 37)
    assert mask.mode == "L" and mask.size == (53, 37)
    assert np.asarray(mask).max() / 255 == pytest.approx(j["max_prob"], abs=1 / 255)


def test_bad_uploads_are_client_errors(url):
    status, j = post_file(url, "notes.png", b"this is not an image")
    assert status == 400 and "notes.png" in j["detail"] and "cannot read image" in j["detail"]
    status, _ = post_file(url, "a.png", png_bytes(8, 8), field="other")
    assert status == 422


def test_serve_cli_usage_errors(capsys):
    assert main(["tamper", "serve", "--port", "70000"]) == 2
    assert "70000" in capsys.readouterr().err
    assert main(["tamper", "serve", "--checkpoint", "/nonexistent.safetensors"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent.safetensors" in err[0]


def browser_skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path):
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)  # fmt: skip
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shipped_url() -> Iterator[str]:
    """The page serving the shipped checkpoint (a tiny untrained model without one)."""
    from lightattn.tamper.checkpoint import load_tamper_model
    from lightattn.tamper.predict import default_checkpoint

    path = default_checkpoint()
    if path is None:
        torch.manual_seed(0)
        model = create_tamper_model(width=0.25, inner="linear").eval()
    else:
        model = load_tamper_model(path)[0]
    yield from start_server(model)


def test_upload_in_headless_chromium(browser, shipped_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    casia = CASIA / "Tp" / "Sp_S_NNN_A_nat0052_nat0052_0209.png"
    image = tmp_path / (casia.name if casia.is_file() else "upload.png")
    if casia.is_file():
        shutil.copy(casia, image)
    else:
        image.write_bytes(png_bytes(256, 384))
    w, h = Image.open(image).size
    browser.get(shipped_url)
    assert browser.find_element(By.ID, "result").is_displayed() is False
    browser.find_element(By.ID, "file").send_keys(str(image))
    WebDriverWait(browser, 60).until(
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error")
        )
    )
    assert browser.find_element(By.ID, "error").text == ""
    overlay = browser.find_element(By.ID, "overlay")
    assert overlay.is_displayed()
    natural = browser.execute_script(
        "const i = arguments[0]; return [i.complete, i.naturalWidth, i.naturalHeight];", overlay
    )
    assert natural == [True, w, h]
    score = float(browser.find_element(By.ID, "score").text)
    assert 0.0 <= score <= 1.0
    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 800
        assert len(np.unique(np.asarray(im.convert("L")))) > 16  # not a blank page
    keep = os.environ.get("LIGHTATTN_SERVE_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep)
