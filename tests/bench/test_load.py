"""The wrk scripts as wrk runs them: a small HTTP server in the test records what wrk sends.

The POST case's bodies must be ones the API accepts (the real request model, and the
service's rule: exactly the lookback, finite, positive, at most MAX_CLOSE), a new window on
every request, near the ticker's price.
"""

from __future__ import annotations

import http.server
import itertools
import json
import math
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.features.stock_prediction.schemas import MAX_CLOSE, PredictFromClosesRequest
from bench.load import PostTarget, run_wrk, write_post_script, write_script

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)

TARGETS = [
    PostTarget("/predict/PETR4.SA?horizon=1", 30, 37.5),
    PostTarget("/predict/AAPL?horizon=1", 60, 190.25),
]


@dataclass(frozen=True)
class Sent:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API serves wrk
    sent: list[Sent]
    limit = 400

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(self.sent) < self.limit:
            self.sent.append(Sent(self.command, self.path, dict(self.headers.items()), body))
        reply = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's handler names

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no line per request."""


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[Sent]]]:
    """``(base_url, requests received)`` of a threaded HTTP server on a free loopback port."""
    sent: list[Sent] = []
    handler = type("Recorder", (_Recorder,), {"sent": sent})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", sent
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_every_post_is_a_fresh_window_the_api_accepts(
    tmp_path: Path, recorder: tuple[str, list[Sent]]
) -> None:
    """Two wrk threads POST to the two tickers in turn: each body parses with the API's own
    request model, holds exactly the ticker's lookback of finite positive closes up to
    MAX_CLOSE, ends within a factor of two of the ticker's price, and no two bodies are the
    same (each thread seeds its own generator). The token and JSON content type are sent."""
    base_url, sent = recorder
    script = write_post_script(tmp_path / "post.lua", TARGETS, "tok-123", seed=7)

    result = run_wrk(base_url, script, seconds=1, connections=4, threads=2)

    assert result.requests > 0 and result.non2xx == 0 and result.socket_errors == 0
    assert len(sent) >= 20
    by_path = {t.path: t for t in TARGETS}
    for request in sent:
        assert request.method == "POST"
        assert request.headers["Authorization"] == "Bearer tok-123"
        assert request.headers["Content-Type"] == "application/json"
        target = by_path[request.path]
        body = PredictFromClosesRequest.model_validate_json(request.body)
        assert body.as_of_date is None
        assert len(body.closes) == target.lookback
        assert all(math.isfinite(c) and 0 < c <= MAX_CLOSE for c in body.closes)
        assert target.price / 2 < body.closes[-1] < target.price * 2
    assert {r.path for r in sent} == set(by_path)
    assert len({r.body for r in sent}) == len(sent)


def test_the_window_is_a_random_walk_of_daily_sized_moves(
    tmp_path: Path, recorder: tuple[str, list[Sent]]
) -> None:
    """With a daily volatility of 2%, no day-to-day move exceeds the uniform step's bound
    (2% * sqrt(3) in log terms, plus rounding to 6 significant digits), and the moves are
    not all zero: the model sees a plausible price path, not noise or a flat line."""
    base_url, sent = recorder
    script = write_post_script(
        tmp_path / "post.lua", TARGETS[:1], None, daily_volatility=0.02, seed=11
    )

    run_wrk(base_url, script, seconds=1, connections=1, threads=1)

    assert sent and "Authorization" not in sent[0].headers
    bound = 0.02 * math.sqrt(3) + 1e-5
    for request in sent:
        closes = json.loads(request.body)["closes"]
        moves = [math.log(b / a) for a, b in itertools.pairwise(closes)]
        assert max(abs(m) for m in moves) <= bound
        assert any(abs(m) > 1e-4 for m in moves)


def test_the_get_script_takes_the_paths_in_turn(
    tmp_path: Path, recorder: tuple[str, list[Sent]]
) -> None:
    """The GET cases: the paths in turn (from whichever wrk takes first), with the token, no
    body."""
    base_url, sent = recorder
    paths = ["/predict/PETR4.SA?horizon=1", "/predict/VALE3.SA?horizon=1"]
    script = write_script(tmp_path / "get.lua", paths, "tok-9")

    run_wrk(base_url, script, seconds=1, connections=1, threads=1)

    assert len(sent) >= 4
    assert all(a.path != b.path for a, b in itertools.pairwise(sent))
    assert {r.path for r in sent} == set(paths)
    assert all(r.method == "GET" and r.body == b"" for r in sent)
    assert all(r.headers["Authorization"] == "Bearer tok-9" for r in sent)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([], "needs at least one ticker whose model accepts closes"),
        ([PostTarget("/predict/X?horizon=1", 0, 10.0)], "lookback >= 1 and price > 0"),
        ([PostTarget("/predict/X?horizon=1", 30, 0.0)], "lookback >= 1 and price > 0"),
        ([PostTarget("/predict/X?horizon=1", 30, math.nan)], "lookback >= 1 and price > 0"),
    ],
)
def test_a_post_script_without_a_usable_target_is_refused(
    tmp_path: Path, targets: list[PostTarget], message: str
) -> None:
    """No script is written that would send windows the API must refuse."""
    with pytest.raises(ValueError, match=message):
        write_post_script(tmp_path / "post.lua", targets, "tok")
    assert not (tmp_path / "post.lua").exists()
