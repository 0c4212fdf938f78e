"""HTTP serving with SageMaker-style prediction capture (Starlette + uvicorn).

``POST /invocations`` accepts

* ``image/png``, ``image/jpeg``, ``application/x-image`` (any Pillow-readable image bytes),
* ``application/x-npy`` (a NumPy ``.npy``: one image (H,W,3) or a batch (N,H,W,3); uint8
  0-255 or float 0-1, RGB),
* ``application/json``: ``{"instances": [...]}`` where each instance is a nested array
  (H,W,3) (uint8 0-255 or float 0-1), a base64 image string, or ``{"b64": "..."}``;
  also ``{"image": "<base64>"}`` or ``{"b64": "..."}`` for a single image.

Response (``application/json``): for one image
``{"probabilities": [...], "predicted_index": i, "predicted_label": "...", "top_k": [...]}``
(``top_k`` only with ``?top_k=K`` or header ``X-Top-K: K``); for ``instances``
``{"predictions": [<same object per instance>]}``. ``GET /ping`` -> 200.
Errors: 413 when the body exceeds ``max_bytes``, 415 for an unsupported content type,
400 for undecodable content, all with ``{"error": "..."}``.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import threading

import numpy as np

from .capture.writer import CaptureWriter

IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "application/x-image")
NPY_TYPES = ("application/x-npy", "application/npy")
JSON_TYPES = ("application/json",)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MAX_TOP_K = 1000


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Sampler:
    """Per-request capture decision from a seeded Generator (lock-protected)."""

    def __init__(self, percentage: float, seed: int | None = None):
        if not 0 <= percentage <= 100:
            raise ValueError("sampling percentage must be within 0-100")
        self.p = percentage / 100.0
        self.rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            return bool(self.rng.random() < self.p)


def _array_image(model, arr) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == object or a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise BadRequest(400, f"an image array must be (H, W, 3) RGB; got shape {a.shape}")
    if a.dtype.kind not in "uif" or not np.all(np.isfinite(a)):
        raise BadRequest(400, "image array must hold finite numbers")
    if a.dtype.kind == "f" and a.max(initial=0) <= 1.0 and a.min(initial=0) >= 0.0:
        a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8) if a.shape[:2] != model.input_size else a
    elif a.dtype.kind == "f":
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    if a.shape[-1] != 3:
        a = np.repeat(a[..., :1], 3, axis=-1) if a.shape[-1] == 1 else a[..., :3]
    return model.preprocess(a.astype(np.uint8) if a.dtype.kind in "ui" else a.astype(np.float32))


def _image_bytes(model, data: bytes) -> np.ndarray:
    from .errors import ImageError
    try:
        return model.preprocess(bytes(data))
    except ImageError as e:
        raise BadRequest(400, f"cannot decode the image: {e}") from None


def _b64_image(model, s: str) -> np.ndarray:
    if "," in s[:100] and s.startswith("data:"):
        s = s.split(",", 1)[1]
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "instance is not valid base64") from None
    return _image_bytes(model, raw)


def decode_inputs(model, body: bytes, content_type: str) -> tuple[np.ndarray, bool]:
    """-> (canonical batch (N,H,W,3), single). Raises BadRequest."""
    ct = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise BadRequest(400, "empty request body")
    if ct in IMAGE_TYPES:
        return _image_bytes(model, body)[None], True
    if ct in NPY_TYPES:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any npy parse problem is a 400
            raise BadRequest(400, f"cannot read the .npy payload: {e}") from None
        if arr.ndim == 4:
            if arr.shape[0] == 0:
                raise BadRequest(400, "empty batch")
            return np.stack([_array_image(model, a) for a in arr]), False
        return _array_image(model, arr)[None], True
    if ct in JSON_TYPES:
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "request body is not valid JSON") from None
        if isinstance(obj, dict) and "instances" in obj:
            inst = obj["instances"]
            if not isinstance(inst, list) or not inst:
                raise BadRequest(400, "'instances' must be a non-empty list")
            return np.stack([_instance(model, x) for x in inst]), False
        if isinstance(obj, dict) and ("image" in obj or "b64" in obj):
            return _instance(model, obj.get("image", obj.get("b64")))[None], True
        if isinstance(obj, list):
            return _instance(model, obj)[None], True
        raise BadRequest(400, "JSON body must be {\"instances\": [...]}, {\"image\": \"<base64>\"} or an array")
    raise BadRequest(415, f"unsupported content type {content_type!r}: use image/png, image/jpeg, "
                          "application/x-image, application/x-npy or application/json")


def _instance(model, x):
    if isinstance(x, dict) and "b64" in x:
        x = x["b64"]
    if isinstance(x, str):
        return _b64_image(model, x)
    if isinstance(x, list):
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (ValueError, TypeError):
            raise BadRequest(400, "instance array is ragged or not numeric") from None
        if arr.ndim == 3 and arr.size and np.all(arr == np.round(arr)) and arr.max() > 1:
            arr = arr.astype(np.uint8) if arr.max() <= 255 and arr.min() >= 0 else arr
        return _array_image(model, arr)
    raise BadRequest(400, "each instance must be a nested array (H, W, 3) or a base64 image string")


def format_prediction(model, row: np.ndarray, top_k: int = 0) -> dict:
    i = int(row.argmax())
    out = {"probabilities": [float(f"{v:.6g}") for v in row], "predicted_index": i,
           "predicted_label": model.label_of(i) if model.labels else str(i)}
    if top_k:
        order = np.argsort(-row, kind="stable")[:top_k]
        out["top_k"] = [{"index": int(j), "label": model.label_of(int(j)) if model.labels else str(int(j)),
                         "probability": float(row[j])} for j in order]
    return out


def build_app(model, capture_dir=None, sampling_percentage: float = 50.0, endpoint: str = "xaudit",
              variant: str = "AllTraffic", seed: int | None = 0, max_bytes: int = DEFAULT_MAX_BYTES,
              max_file_bytes: int | None = None):
    """The Starlette app. ``model`` is loaded once by the caller and shared by requests
    (predictions run in Starlette's thread pool)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    writer = None
    if capture_dir is not None:
        kw = {"max_bytes": max_file_bytes} if max_file_bytes else {}
        writer = CaptureWriter(capture_dir, endpoint=endpoint, variant=variant, **kw)
    sampler = Sampler(sampling_percentage, seed)
    counters = {"requests": 0, "captured": 0, "errors": 0}
    lock = threading.Lock()

    def error(status, msg):
        with lock:
            counters["errors"] += 1
        return JSONResponse({"error": msg}, status_code=status)

    def work(body, ctype, top_k, inference_id):
        batch, single = decode_inputs(model, body, ctype)
        probs = model.predict(batch)
        preds = [format_prediction(model, r, top_k) for r in probs]
        payload = preds[0] if single else {"predictions": preds}
        text = json.dumps(payload, separators=(",", ":"))
        captured = False
        if writer is not None and sampler():
            writer.capture(body, (ctype or "application/octet-stream").split(";")[0].strip(), text,
                           inference_id=inference_id)
            captured = True
        return text, captured

    async def invocations(request):
        ctype = request.headers.get("content-type", "")
        clen = request.headers.get("content-length")
        if clen is not None:
            try:
                if int(clen) > max_bytes:
                    return error(413, f"request body of {clen} bytes exceeds the {max_bytes}-byte limit")
            except ValueError:
                return error(400, "bad Content-Length")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    return error(413, f"request body exceeds the {max_bytes}-byte limit")
                chunks.append(chunk)
        except ClientDisconnect:
            return Response(status_code=400)
        body = b"".join(chunks)
        tk = request.query_params.get("top_k") or request.headers.get("x-top-k") or "0"
        try:
            top_k = max(0, min(MAX_TOP_K, int(tk)))
        except ValueError:
            return error(400, f"top_k must be an integer, got {tk!r}")
        inference_id = request.headers.get("x-amzn-sagemaker-inference-id") or request.headers.get("x-inference-id")
        try:
            text, captured = await run_in_threadpool(work, body, ctype, top_k, inference_id)
        except BadRequest as e:
            return error(e.status, e.message)
        except Exception as e:  # noqa: BLE001 - a model error on one request must not kill the server
            from .errors import XauditError
            if isinstance(e, XauditError):
                return error(400, str(e).splitlines()[0])
            return error(500, f"prediction failed: {type(e).__name__}: {e}")
        with lock:
            counters["requests"] += 1
            counters["captured"] += int(captured)
        return Response(text, media_type="application/json")

    async def ping(request):
        return Response("", status_code=200)

    async def stats(request):
        with lock:
            return JSONResponse(dict(counters))

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            if writer is not None:
                writer.close()

    app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"]),
                            Route("/ping", ping, methods=["GET"]),
                            Route("/stats", stats, methods=["GET"])],
                    lifespan=lifespan)
    app.state.writer = writer
    app.state.counters = counters
    return app


def serve(model, host="127.0.0.1", port=8080, log_level="warning", **kw):
    import uvicorn
    app = build_app(model, **kw)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
