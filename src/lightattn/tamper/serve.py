"""`lightattn tamper serve`: a local web page where a user drops or picks an image and sees
the tamper-mask overlay and the image score.

Routes of :func:`create_app` (FastAPI, imported lazily: the rest of the package works
without fastapi, uvicorn and python-multipart):

* ``GET /``: the page (no external resources; works offline);
* ``POST /api/predict``: multipart form field ``file`` (an image, at most
  :data:`MAX_UPLOAD_BYTES`) -> JSON ``name, width, height, score, max_prob,
  tampered_fraction`` and ``overlay``, ``mask`` as ``data:image/png;base64`` URLs of the
  input's size (the files ``tamper predict`` writes); a file that is not a readable image
  -> 400 with ``detail`` naming it, too large -> 413;
* ``GET /api/health``: ``{"status": "ok", "model": <create_tamper_model arguments>}``.

One prediction runs at a time (a lock around the model). This module does not use
``from __future__ import annotations``: FastAPI reads the route annotations at run time and
the route types are imported inside :func:`create_app`.
"""

import base64
import io
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image
from torch import nn

from .data import load_image
from .predict import DEFAULT_MAX_SIDE, mask_image, overlay_image, predict_array

MAX_UPLOAD_BYTES = 64 * 2**20
REQUIREMENTS = "fastapi, uvicorn and python-multipart"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lightattn tamper localization</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
 #drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
 #drop.over { border-color: #c00; background: #fff3f3; }
 #result { display: flex; gap: 1.5em; margin-top: 1.5em; flex-wrap: wrap; }
 #result[hidden] { display: none; }
 figure { margin: 0; } figcaption { font-size: 0.9em; color: #555; }
 img { max-width: 520px; max-height: 520px; border: 1px solid #ccc; }
 #score { font-size: 1.6em; font-weight: bold; }
 #error { color: #b00; }
</style>
</head>
<body data-state="idle">
<h1>Tamper localization</h1>
<p>Drop an image (JPEG, PNG, TIFF, BMP, WebP) or choose one. It is analysed on this
computer by <code>stdc_tamper</code>; red marks pixels predicted as manipulated.</p>
<div id="drop">Drop an image here, or
 <input type="file" id="file" name="file" accept="image/*"></div>
<p id="status"></p><p id="error"></p>
<div id="summary" hidden>Image score (probability that the image is manipulated):
 <span id="score"></span> &middot; pixels above 0.5: <span id="fraction"></span>
 &middot; <span id="size"></span></div>
<div id="result" hidden>
 <figure><img id="overlay" alt="overlay"><figcaption>overlay (red = tampered)</figcaption></figure>
 <figure><img id="mask" alt="mask"><figcaption>tamper probability (white = 1)</figcaption></figure>
</div>
<script>
const $ = (id) => document.getElementById(id);
const drop = $("drop"), input = $("file");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });
async function send(file) {
  document.body.dataset.state = "busy";
  $("status").textContent = "Analysing " + file.name + "\\u2026";
  $("error").textContent = "";
  $("result").hidden = true; $("summary").hidden = true;
  const body = new FormData();
  body.append("file", file);
  try {
    const r = await fetch("api/predict", { method: "POST", body });
    const j = await r.json();
    if (!r.ok) throw new Error(j.detail || r.statusText);
    $("overlay").src = j.overlay; $("mask").src = j.mask;
    $("score").textContent = j.score.toFixed(3);
    $("fraction").textContent = (100 * j.tampered_fraction).toFixed(1) + "%";
    $("size").textContent = j.name + ", " + j.width + "\\u00d7" + j.height;
    $("result").hidden = false; $("summary").hidden = false;
    $("status").textContent = "";
    document.body.dataset.state = "done";
  } catch (err) {
    $("status").textContent = "";
    $("error").textContent = "Error: " + err.message;
    document.body.dataset.state = "error";
  }
}
</script>
</body>
</html>
"""


def _png_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(data: bytes, name: str) -> Any:
    """Uploaded bytes -> uint8 RGB (H, W, 3) by the rules of ``tamper predict``
    (:func:`lightattn.tamper.data.load_image`); ValueError naming ``name`` otherwise."""
    suffix = Path(name).suffix if Path(name).suffix else ".img"
    with tempfile.NamedTemporaryFile(suffix=suffix[:16]) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return load_image(tmp.name)
        except ValueError as err:
            reason = str(err).replace(tmp.name, "").lstrip(": ")
            raise ValueError(f"{name}: {reason}") from None


def predict_bytes(
    model: nn.Module, data: bytes, name: str, max_side: int = DEFAULT_MAX_SIDE
) -> dict[str, Any]:
    """One uploaded image -> the JSON of ``POST /api/predict`` (see the module doc)."""
    rgb = decode_upload(data, name)
    prob, score = predict_array(model, rgb, max_side)
    return {
        "name": name,
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "score": score,
        "max_prob": float(prob.max()),
        "tampered_fraction": float((prob > 0.5).mean()),
        "overlay": _png_url(overlay_image(rgb, prob)),
        "mask": _png_url(mask_image(prob)),
    }


def require() -> None:
    """ImportError naming the packages when the web stack is missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ImportError(f"lightattn tamper serve needs {REQUIREMENTS} ({err})") from err


def create_app(
    model: nn.Module, max_side: int = DEFAULT_MAX_SIDE, model_kwargs: dict | None = None
) -> Any:
    """The FastAPI application serving ``model`` (routes in the module doc)."""
    require()
    from fastapi import FastAPI, File, HTTPException, UploadFile
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="lightattn tamper localization", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    model.eval()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_kwargs or {}}

    @app.post("/api/predict")
    def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"{file.filename}: larger than {MAX_UPLOAD_BYTES} bytes")
        name = Path(file.filename or "upload").name
        try:
            with lock:
                return predict_bytes(model, data, name, max_side)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None

    return app


def serve(
    model: nn.Module,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_side: int = DEFAULT_MAX_SIDE,
    model_kwargs: dict | None = None,
) -> None:
    """Run the page on http://host:port until interrupted (uvicorn)."""
    import uvicorn

    app = create_app(model, max_side, model_kwargs)
    uvicorn.run(app, host=host, port=port, log_level="info")
