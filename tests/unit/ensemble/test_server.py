"""`searchsvc serve`'s HTTP app, over real HTTP (uvicorn on a loopback port): MLflow's request
layouts answered like `mlflow models serve`, refused input as HTTP 400 with one line."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import uvicorn
from torch import nn

from searchsvc.ensemble.predictor import Ensemble, Member
from searchsvc.ensemble.server import create_app
from tests.servers import free_port

X = [[0.1, 0.2, 0.3, 0.4], [0.9, 0.0, 1.0, 0.5]]


@pytest.fixture(scope="module")
def ensemble() -> Ensemble:
    torch.manual_seed(0)
    members = [Member(0, 1.0, {}, None), Member(1, 1.0, {}, None)]
    networks = [nn.Linear(4, 3), nn.Linear(4, 3)]
    return Ensemble(members, networks, 4, 3, feature_range=(0.0, 1.0))


@pytest.fixture(scope="module")
def base(ensemble: Ensemble) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(create_app(ensemble), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def post(base: str, data: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{base}/invocations", data=data, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refusal(message: str) -> dict[str, str]:
    return {"error_code": "BAD_REQUEST", "message": message}


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": X},
        {"instances": X},
        {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": X}},
        {"dataframe_records": [dict(zip("abcd", row, strict=True)) for row in X]},
    ],
    ids=["inputs", "instances", "dataframe_split", "dataframe_records"],
)
def test_every_mlflow_json_layout_gets_the_ensembles_probabilities(base, ensemble, body):
    status, reply = post(base, json.dumps(body).encode())
    assert status == 200
    expected = ensemble.predict_proba(np.asarray(X, dtype=np.float32))
    np.testing.assert_allclose(np.array(reply["predictions"]), expected, atol=1e-6)
    assert set(reply) == {"predictions"}


def test_csv_with_a_header_row_is_read_like_mlflows(base, ensemble):
    status, reply = post(base, b"a,b,c,d\n0.1,0.2,0.3,0.4\n0.9,0.0,1.0,0.5\n", "text/csv")
    assert status == 200
    expected = ensemble.predict_proba(np.asarray(X, dtype=np.float32))
    np.testing.assert_allclose(np.array(reply["predictions"]), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            json.dumps({"inputs": [[0, 255, 3, 4]]}),
            "input values span [0, 255] but the training features spanned [0, 1] (accepted "
            "[-0.5, 1.5]; 1 of 1 rows outside): scale the input like the training data; if "
            "these are 0-255 pixels, divide by 255",
        ),
        (json.dumps({"inputs": [[0.5] * 10]}), "wrong number of features: expected 4, got 10"),
        (
            '{"inputs": [[NaN, 0.1, 0.2, 0.3]]}',
            "input contains 1 NaN and 0 inf values; all values must be finite",
        ),
        (json.dumps({"inputs": []}), "input is empty: shape (0,)"),
        (
            json.dumps({"inputs": [[0.1, 0.2], [0.3]]}),
            "inputs is not a table of numbers (rows of unequal length or a non-number)",
        ),
        (
            json.dumps({"rows": X}),
            "the JSON object needs exactly one of inputs, instances, dataframe_split, "
            "dataframe_records",
        ),
        (
            "{bad",
            "the request body is not valid JSON: Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)",
        ),
    ],
    ids=["integer-pixels", "feature-count", "nan", "empty", "ragged", "no-layout", "not-json"],
)
def test_refused_input_is_a_400_with_one_line_and_nothing_echoed(base, data, message):
    assert post(base, data.encode()) == (400, refusal(message))


def test_the_message_is_the_python_apis_own(base, ensemble):
    wrong = [[0.5] * 10]
    with pytest.raises(Exception) as raised:
        ensemble.predict_proba(np.asarray(wrong, dtype=np.float32))
    assert post(base, json.dumps({"inputs": wrong}).encode()) == (400, refusal(str(raised.value)))


def test_an_unsupported_content_type_is_a_415(base):
    expected = refusal("unsupported content type 'text/plain': send application/json or CSV")
    assert post(base, b"0.1", "text/plain") == (415, expected)


def test_ping_answers(base):
    with urllib.request.urlopen(f"{base}/ping", timeout=10) as reply:
        assert reply.status == 200
