"""The inspection server's FastAPI application: ``create_app(model)``.

Endpoints (all answers JSON except the page):

- ``GET /``: the inspection page (``static/index.html``, no external resources).
- ``POST /predict[?overlay=true]``: one image as the multipart/form-data field ``file``; the
  prediction of :meth:`distilad.serve.runner.ModelRunner.predict` (with ``overlay=true`` also
  the heatmap panel as a base64 PNG in ``overlay_png``).
- ``GET /health``: ``{"status": "ok", ...}`` with the number of images served and waiting.
- ``GET /model``: the model's description (:meth:`ModelRunner.info`).

Every refusal is a 4xx (503 when too many requests wait) with ``{"error": "<one line>"}``; the
server goes on serving. No interactive API docs: they would load scripts from a CDN.
"""

import contextlib
import os
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from distilad.errors import DistiladError
from distilad.serve.runner import DEFAULT_MAX_PENDING, ModelRunner
from distilad.serve.uploads import UploadError, UploadLimits

#: what a multipart body may hold beyond the file itself (boundaries, part headers).
MULTIPART_SLACK_BYTES = 64 * 1024
#: the form field that carries the image.
FILE_FIELD = "file"


def load_served_model(path: str | os.PathLike, device: str = "auto",
                      threads: int | None = None) -> Any:
    """A ``.onnx`` file (run by onnxruntime with ``threads`` intra-op threads) or a
    ``.distilad`` model file, loaded for serving."""
    from distilad.onnx_model import OnnxModel, is_onnx_path

    if is_onnx_path(path):
        return OnnxModel(path, device=device, threads=threads)
    import distilad

    return distilad.load_detector(path, device=device)


def page_html() -> str:
    """The inspection page shipped with the package."""
    return (resources.files("distilad.serve") / "static" / "index.html").read_text("utf-8")


class _BodyTooLarge(Exception):
    pass


def _limited_receive(receive: Any, limit: int) -> Any:
    """An ASGI ``receive`` that raises _BodyTooLarge once more than ``limit`` body bytes came
    (a client may send no Content-Length, or a wrong one)."""
    received = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
        return message

    return wrapped


def create_app(model: Any, *, limits: UploadLimits | None = None,
               max_pending: int = DEFAULT_MAX_PENDING, device: str = "auto",
               source: str | os.PathLike | None = None) -> Any:
    """The FastAPI application serving ``model``.

    Args:
        model: a model file path (``.distilad`` or ``.onnx``) or a loaded, calibrated model
            (:class:`distilad.Detector` or :class:`distilad.onnx_model.OnnxModel`).
        limits: upload limits (default: 20 MB and PIL's decompression-bomb pixel limit).
        max_pending: requests that may wait for the model at once; more get 503.
        device: where a model given as a path is loaded.
        source: the file a loaded ``model`` came from (its name and format are reported by
            ``GET /model``); a path given as ``model`` is its own source.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException

    import distilad

    if isinstance(model, (str, os.PathLike)):
        source = Path(model)
        model = load_served_model(source, device=device)
    runner = ModelRunner(model, limits=limits, max_pending=max_pending, source=source)
    started = time.time()
    page = page_html()
    body_limit = runner.limits.max_bytes + MULTIPART_SLACK_BYTES

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(title="distilad inspection server", version=distilad.__version__,
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.runner = runner

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}"
                 for e in exc.errors()]
        return error(400, "bad request: " + "; ".join(parts))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(DistiladError)
    async def model_error(request: Request, exc: DistiladError) -> JSONResponse:
        return error(422, str(exc))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "method": runner.model.name, "served": runner.served,
                "pending": runner.pending, "uptime_s": round(time.time() - started, 1)}

    @app.get("/model")
    async def model_info() -> dict[str, Any]:
        return runner.info()

    @app.post("/predict")
    async def predict(request: Request, overlay: bool = False) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise UploadError(f"content type {kind or 'none'!r}: send the image as "
                              f"multipart/form-data in the field {FILE_FIELD!r} (curl -F "
                              f"{FILE_FIELD}=@image.png)", status=415)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > body_limit:
            raise UploadError(f"request of {int(length):,} bytes, over the server's limit of "
                              f"{runner.limits.max_bytes:,} bytes per image", status=413)
        limited = Request(request.scope, _limited_receive(request.receive, body_limit))
        try:
            form = await limited.form(max_files=1, max_fields=16)
        except _BodyTooLarge:
            raise UploadError(f"request body over the server's limit of "
                              f"{runner.limits.max_bytes:,} bytes per image", status=413) from None
        try:
            upload = form.get(FILE_FIELD)
            if not isinstance(upload, UploadFile):
                raise UploadError(f"no file: send the image as multipart/form-data in the field "
                                  f"{FILE_FIELD!r} (curl -F {FILE_FIELD}=@image.png)")
            data = await upload.read()
            name = Path(upload.filename or "upload").name
            content_type = upload.content_type
        finally:
            await form.close()
        return await run_in_threadpool(runner.predict, data, name, content_type, overlay)

    return app
