"""``searchsvc serve``: a study's ensemble over HTTP, with MLflow's request format and one-line
errors.

The routes and request bodies are those of ``mlflow models serve`` (``POST /invocations`` with
``{"inputs": ...}``, ``{"instances": ...}``, ``{"dataframe_split": ...}`` or
``{"dataframe_records": ...}`` as JSON, or CSV; ``GET /ping``, ``/health``, ``/version``), and a
good request gets the same answer: ``{"predictions": [[p_0, ..., p_k], ...]}``, the class
probabilities. MLflow's scoring server is not used because it answers any exception from
``predict`` with a generic message plus the whole server-side stack trace (and, for a wrong
shape, the whole input echoed back); here refused input gets HTTP 400 and
``{"error_code": "BAD_REQUEST", "message": "<one line>"}``, the line being the one
``load_ensemble(...).predict`` raises for the same array. JSON numbers are read as float32 (the
model's signature, as MLflow does), so 0-255 pixels are refused by the training-range check.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import anyio
import mlflow
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from searchsvc.ensemble.predictor import Ensemble
from searchsvc.errors import EnsembleError, first_line

__all__ = ["create_app", "serve"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 300
"""Longest message sent back: a parser's message may quote the request, which is never echoed."""


class RequestRefused(Exception):
    """A request that cannot be answered; ``status`` and a one-line ``message`` for the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refusal(status: int, message: str) -> JSONResponse:
    line = first_line(message) or "the request was refused"
    if len(line) > _MAX_MESSAGE:
        line = line[: _MAX_MESSAGE - 3] + "..."
    return JSONResponse({"error_code": "BAD_REQUEST", "message": line}, status_code=status)


_FORMATS = ("inputs", "instances", "dataframe_split", "dataframe_records")


def _as_features(value: Any, where: str) -> np.ndarray:
    """``value`` as a float32 array, as the model's signature casts it."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise RequestRefused(
            400, f"{where} is not a table of numbers (rows of unequal length or a non-number)"
        ) from None


def _rows_of(payload: dict[str, Any]) -> np.ndarray:
    """The features of a JSON request in one of MLflow's four layouts."""
    present = [key for key in _FORMATS if key in payload]
    if len(present) != 1:
        raise RequestRefused(400, f"the JSON object needs exactly one of {', '.join(_FORMATS)}")
    key = present[0]
    value = payload[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise RequestRefused(400, 'dataframe_split needs a "data" list of rows')
        value = value["data"]
    elif key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise RequestRefused(400, "dataframe_records needs a list of {column: value} objects")
        value = pd.DataFrame.from_records(value).to_numpy() if value else []
    return _as_features(value, key)


def _read_body(body: bytes, content_type: str) -> np.ndarray:
    """The request's features (JSON in MLflow's layouts, or CSV with a header row as
    ``DataFrame.to_csv`` writes it). Written here rather than taken from MLflow's scoring
    server because its parser quotes the request in its errors and refuses CSV for a tensor
    signature."""
    mime = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused(400, "the request body is not UTF-8 text") from None
    if mime == "text/csv":
        try:
            frame = pd.read_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError) as exc:
            raise RequestRefused(400, f"the CSV body cannot be read: {exc}") from None
        return _as_features(frame.to_numpy(), "the CSV body")
    if mime != "application/json":
        raise RequestRefused(
            415, f"unsupported content type {mime or '(none)'!r}: send application/json or CSV"
        )
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestRefused(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestRefused(
            400, f"the request body must be a JSON object with one of {', '.join(_FORMATS)}"
        )
    return _rows_of(payload)


def _predict(ensemble: Ensemble, body: bytes, content_type: str) -> Response:
    try:
        probs = ensemble.predict_proba(_read_body(body, content_type))
    except RequestRefused as exc:
        return _refusal(exc.status, exc.message)
    except EnsembleError as exc:
        return _refusal(400, str(exc))
    return JSONResponse({"predictions": probs.tolist()})


def create_app(ensemble: Ensemble) -> FastAPI:
    """The HTTP app serving ``ensemble`` (see the module docstring for the protocol)."""
    app = FastAPI(title="searchsvc ensemble", docs_url=None, redoc_url=None)

    @app.get("/ping")
    @app.get("/health")
    async def ping() -> Response:
        return Response(content="\n", status_code=200, media_type="application/json")

    @app.get("/version")
    async def version() -> Response:
        return Response(content=mlflow.__version__, media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        body = await request.body()
        # Prediction is torch work: off the event loop, so /ping answers meanwhile.
        return await anyio.to_thread.run_sync(
            _predict, ensemble, body, request.headers.get("content-type", "")
        )

    return app


def serve(ensemble: Ensemble, *, host: str = "127.0.0.1", port: int = 5001) -> None:
    """Serves ``ensemble`` until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(create_app(ensemble), host=host, port=port, log_level="warning")
