"""The remote flavor against real upstreams on 127.0.0.x: another Modelyard server (OIP v2) and
a small OpenAI-compatible server written here (stdlib http.server, scripted per request):
retries, timeouts, broken answers, the circuit breaker, the retry budget, the outbound guard
and the secret kept out of errors, the registry and logs."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.domain.errors import ModelyardError, ValidationFailed
from modelyard.flavors import detect_for_files
from modelyard.flavors import get as get_flavor
from modelyard.flavors.base import ChatModel, Embedder
from modelyard.flavors.remote import (
    ALLOW_ENV,
    SECRETS_ENV,
    SPEC_FILE,
    RemoteChatPredictor,
    RemoteEmbeddingsPredictor,
    RemoteModel,
    RemoteOipPredictor,
    RemoteSecretMissing,
    RemoteSecretRefused,
    UpstreamError,
    UpstreamTimeout,
    check_destination,
    connect,
)
from modelyard.governance.outbound import OutboundPolicy, OutboundRefused
from modelyard.serving.resilience import CircuitOpen, RetryBudget
from modelyard.serving.server import BackgroundServer

SECRET = "sk-test-Zq8vT3secretvalue0123456789"
KEY_ENV = "FAKE_UPSTREAM_API_KEY"
LOCAL = OutboundPolicy.parse(["127.0.0.1"])


@pytest.fixture(autouse=True)
def released_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The operator releases these secrets to remote models (nothing else may be named)."""
    monkeypatch.setenv(SECRETS_ENV, f"{KEY_ENV},NOT_SET_ANYWHERE_X,CHURN_UPSTREAM_KEY,"
                                    f"{tmp_path / 'upstream.key'}")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: nothing here depends on the metadata database."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


# -- a scripted OpenAI-compatible (and minimal OIP) upstream ------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeUpstream:
    """A real HTTP/1.1 server on a thread. ``do(actions...)`` scripts the next requests, one
    action each ("ok" when the script is empty): an HTTP status ("500"), "slow", "disconnect",
    "garbage", "shape", "nostream", "cut-stream", "echo-key" or "redirect:<url>"."""

    def __init__(self, host: str = "127.0.0.1", key: str | None = SECRET) -> None:
        self.key = key
        self.plan: list[str] = []
        self.requests: list[Seen] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is used

            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer._sockets.add(self.connection)

            def do_GET(self) -> None:
                outer.handle(self, "GET")

            def do_POST(self) -> None:
                outer.handle(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = False  # so server_close() joins every handler thread

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # answers written to clients that already gave up (timeouts)

        self.httpd = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-upstream",
                                       kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s
        self.thread.start()

    def do(self, *actions: str) -> None:
        with self._lock:
            self.plan.extend(actions)

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        with self._lock:  # wake handlers waiting on idle keep-alive connections
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.httpd.server_close()
        self.thread.join(timeout=10)

    # -- answers --------------------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            action = self.plan.pop(0) if self.plan else "ok"
            self.requests.append(Seen(method, h.path, headers, body))
        if action.startswith("echo-key"):  # a careless upstream quoting what it received
            padding = "x" * 185 if action == "echo-key-late" else ""  # cut at 200 characters
            return self.send(h, 400, {"error": {"message": f"{padding} bad key "
                                                           f"{headers.get('authorization')}"}})
        if self.key and headers.get("authorization") != f"Bearer {self.key}":
            return self.send(h, 401, {"error": {"message": "missing or wrong API key"}})
        if action.isdigit():
            return self.send(h, int(action), {"error": {"message": f"failure {action}"}})
        if action.startswith("redirect:"):
            h.send_response(307)
            h.send_header("Location", action.removeprefix("redirect:"))
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        if action == "slow":
            self.release.wait(5)
        if action == "garbage":
            return self.send(h, 200, b"{this is not json")
        if action == "disconnect":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            h.wfile.write(b'{"data": [')
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        if h.path == "/v1/chat/completions":
            return self.chat(h, body, action)
        if h.path == "/v1/embeddings":
            texts = body["input"]
            vectors = [[float(len(t)), float(t.count("a")), 1.0] for t in texts]
            if action == "shape":
                vectors[0] = vectors[0][:2]
            return self.send(h, 200, {"object": "list", "model": body["model"],
                                      "data": [{"object": "embedding", "index": i,
                                                "embedding": v}
                                               for i, v in reversed(list(enumerate(vectors)))],
                                      "usage": {"prompt_tokens": len(texts),
                                                "total_tokens": len(texts)}})
        if h.path == "/v2/models/summer":
            return self.send(h, 200, {
                "name": "summer", "versions": ["1"], "platform": "fake",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                "outputs": [{"name": "total", "datatype": "FP32", "shape": [-1]}]})
        if h.path == "/v2/models/summer/infer":
            (tensor,) = body["inputs"]
            x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            total = x.sum(axis=1)
            if action == "shape":
                total = total[:1]
            return self.send(h, 200, {"model_name": "summer", "outputs": [
                {"name": "total", "datatype": "FP32", "shape": list(total.shape),
                 "data": total.tolist()}]})
        return self.send(h, 404, {"error": "no such route"})

    def chat(self, h: BaseHTTPRequestHandler, body: dict[str, Any], action: str) -> None:
        prompt = body["messages"][-1]["content"]
        reply = f"echo: {prompt}"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(reply.split())}
        if not body.get("stream") or action == "nostream":
            return self.send(h, 200, {"id": "c1", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply},
                 "finish_reason": "stop"}], "usage": usage})
        words = reply.split(" ")
        pieces = [words[0]] + [" " + w for w in words[1:]]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True

        def event(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            h.wfile.write(f"data: {data}\n\n".encode())
            h.wfile.flush()

        h.wfile.write(b": keep-alive comment\n\n")
        for i, piece in enumerate(pieces):
            delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
            event({"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            if action == "cut-stream":
                return None
        event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"choices": [], "usage": usage})
        event("[DONE]")
        return None

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def allow_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1")
    monkeypatch.setenv(KEY_ENV, SECRET)


def chat_model(fake: FakeUpstream, **options: Any) -> RemoteModel:
    return RemoteModel(kind="openai-chat", url=f"{fake.url}/v1", model="tiny-chat",
                       api_key_env=KEY_ENV, **options)


def embeddings_model(fake: FakeUpstream, **options: Any) -> RemoteModel:
    return RemoteModel(kind="openai-embeddings", url=f"{fake.url}/v1", model="tiny-embed",
                       api_key_env=KEY_ENV, **options)


def upstream_error(caught: pytest.ExceptionInfo[UpstreamError], code: str = "upstream_error",
                   status: int = 502) -> UpstreamError:
    error = caught.value
    assert error.code == code and error.status == status, error.to_problem()
    assert SECRET not in str(error.to_problem())
    return error


# -- the OpenAI kinds -----------------------------------------------------------------------

def test_remote_chat_registers_predicts_and_streams(yard: Yard, upstream: FakeUpstream,
                                                    allow_local: None) -> None:
    version = yard.register("tiny-chat", chat_model(upstream, headers={"x-team": "fraud"}),
                            flavor="remote")
    assert version.flavor == "remote"
    assert [s.to_dict() for s in version.signature.inputs] == [
        {"name": "prompt", "dtype": "string", "shape": [-1]}]
    assert version.flavor_options["url"] == f"{upstream.url}/v1"
    assert version.flavor_options["api_key_env"] == KEY_ENV

    # In-process, through a deployment: its zero-filled warm-up costs no upstream call.
    out = yard.predict("tiny-chat", {"prompt": ["hello world", "", "bye"]})
    assert out["completion"].tolist() == ["echo: hello world", "", "echo: bye"]
    assert len(upstream.requests) == 2
    seen = upstream.requests[0]
    assert seen.headers["x-team"] == "fraud" and seen.body["model"] == "tiny-chat"

    with connect(chat_model(upstream), policy=LOCAL) as predictor:
        assert isinstance(predictor, ChatModel) and not isinstance(predictor, Embedder)
        chunks = list(predictor.chat([{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "hi there"}],
                                     {"max_tokens": 5, "temperature": 0.0, "top_p": None}))
        assert [c.text for c in chunks] == ["echo:", " hi", " there", ""]
        last = chunks[-1]
        assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 2, 3)
        sent = upstream.requests[-1].body
        assert sent["stream"] is True and sent["max_tokens"] == 5 and "top_p" not in sent

        upstream.do("nostream")  # an upstream that cannot stream answers in one piece
        assert [c.text for c in predictor.chat([{"role": "user", "content": "a b"}], {})] == [
            "echo: a b", ""]

        upstream.do("cut-stream")  # ends after the first piece, without [DONE]
        stream = predictor.chat([{"role": "user", "content": "x y"}], {})
        assert next(stream).text == "echo:"
        with pytest.raises(UpstreamError, match="ended before") as caught:
            list(stream)
        upstream_error(caught)

        # A reader that stops early does not count against the upstream.
        stream = predictor.chat([{"role": "user", "content": "p q"}], {})
        next(stream)
        stream.close()  # type: ignore[attr-defined]
        assert predictor.health()["state"] == "closed"

    with connect(chat_model(upstream, stream=False), policy=LOCAL) as predictor:
        assert [c.text for c in predictor.chat([{"role": "user", "content": "z"}], {})] == [
            "echo: z", ""]
        assert upstream.requests[-1].body.get("stream") is None


def test_remote_embeddings_predict_and_embed(yard: Yard, upstream: FakeUpstream,
                                             allow_local: None) -> None:
    yard.register("tiny-embed", embeddings_model(upstream))
    out = yard.predict("tiny-embed", {"text": ["banana", "kiwi"]})["embedding"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[6, 3, 1], [4, 0, 1]])  # reordered by index

    with connect(embeddings_model(upstream), policy=LOCAL) as predictor:
        assert isinstance(predictor, Embedder) and not isinstance(predictor, ChatModel)
        found = predictor.embed(["a", "aa", "aaa"])
        assert found.vectors.shape == (3, 3) and found.tokens == 3
        assert predictor.embed([]).vectors.shape == (0, 0)

        upstream.do("shape")  # vectors of different lengths
        with pytest.raises(UpstreamError, match="one length") as caught:
            predictor.embed(["a", "b"])
        upstream_error(caught)
        assert predictor.health()["consecutive_failures"] == 1


# -- retries, timeouts, broken answers --------------------------------------------------------

def test_remote_retries_5xx_until_success_but_never_4xx(upstream: FakeUpstream) -> None:
    with connect(embeddings_model(upstream, retries=2), policy=LOCAL, secret=SECRET) as p:
        upstream.do("500", "503")
        assert p.embed(["ok"]).vectors.shape == (1, 3)
        assert len(upstream.requests) == 3

        upstream.do("502", "504", "503")  # one more failure than retries
        with pytest.raises(UpstreamError) as caught:
            p.embed(["ok"])
        assert upstream_error(caught).extra["upstream_status"] == 503
        assert len(upstream.requests) == 6

        upstream.do("400")
        with pytest.raises(UpstreamError, match="answered 400: failure 400") as caught:
            p.embed(["ok"])
        assert upstream_error(caught).extra["upstream_status"] == 400
        assert len(upstream.requests) == 7  # not retried
        # the upstream is up and judged the request: not a failure of its health
        assert p.health() == {"kind": "openai-embeddings", "upstream": "127.0.0.1",
                              "state": "closed", "consecutive_failures": 0}


def test_remote_slow_upstream_is_a_504_after_each_attempt(upstream: FakeUpstream) -> None:
    model = embeddings_model(upstream, timeout_s=0.2, retries=1)
    with connect(model, policy=LOCAL, secret=SECRET) as predictor:
        upstream.do("slow", "slow")
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"within 0\.2 s") as caught:
            predictor.embed(["x"])
        assert time.monotonic() - start < 2.0
        upstream_error(caught, "upstream_timeout", 504)
        assert len(upstream.requests) == 2  # a timeout is retried

        # A status 504 from a gateway in front of the upstream is the same kind of failure.
        upstream.do("504", "504")
        with pytest.raises(UpstreamTimeout) as caught:
            predictor.embed(["x"])
        upstream_error(caught, "upstream_timeout", 504)


def test_remote_disconnect_mid_answer_is_a_502_and_not_retried(upstream: FakeUpstream) -> None:
    with connect(embeddings_model(upstream, retries=3), policy=LOCAL, secret=SECRET) as p:
        upstream.do("disconnect")
        with pytest.raises(UpstreamError, match="broke off") as caught:
            p.embed(["x"])
        upstream_error(caught)
        assert len(upstream.requests) == 1  # it had answered: the work may have been done
        assert p.embed(["x"]).vectors.shape == (1, 3)  # a fresh connection next time


def test_remote_predictor_closes_its_pool_when_collected(upstream: FakeUpstream) -> None:
    predictor = connect(embeddings_model(upstream), policy=LOCAL, secret=SECRET)
    predictor.embed(["x"])
    client, collected = predictor._client, weakref.ref(predictor)
    del predictor
    gc.collect()
    assert collected() is None and client.is_closed


def test_remote_garbage_is_a_502_that_counts_for_the_breaker(upstream: FakeUpstream) -> None:
    with connect(chat_model(upstream, retries=3), policy=LOCAL, secret=SECRET) as p:
        upstream.do("garbage")
        with pytest.raises(UpstreamError, match="not valid JSON") as caught:
            p.predict({"prompt": np.array(["hi"], dtype=object)})
        upstream_error(caught)
        assert len(upstream.requests) == 1
        assert p.health()["consecutive_failures"] == 1


def test_remote_breaker_opens_refuses_fast_then_recovers(upstream: FakeUpstream) -> None:
    model = embeddings_model(upstream, retries=0, breaker_failures=2, breaker_reset_s=0.3)
    with connect(model, policy=LOCAL, secret=SECRET) as predictor:
        upstream.do("500", "garbage")
        for _ in range(2):
            with pytest.raises(UpstreamError):
                predictor.embed(["x"])
        assert predictor.health()["state"] == "open"
        calls = len(upstream.requests)
        start = time.monotonic()
        with pytest.raises(CircuitOpen) as caught:
            predictor.embed(["x"])
        assert time.monotonic() - start < 0.05
        assert caught.value.status == 503 and caught.value.code == "circuit_open"
        assert len(upstream.requests) == calls  # refused without calling

        time.sleep(0.35)  # half-open: one probe; it fails, so the circuit opens again
        upstream.do("503")
        with pytest.raises(UpstreamError):
            predictor.embed(["x"])
        assert predictor.health()["state"] == "open"
        with pytest.raises(CircuitOpen):
            predictor.embed(["x"])

        time.sleep(0.35)  # the next probe succeeds and closes it
        assert predictor.embed(["x"]).vectors.shape == (1, 3)
        assert predictor.health()["state"] == "closed"
        assert predictor.embed(["y"]).vectors.shape == (1, 3)


def test_remote_retry_budget_stops_retries(upstream: FakeUpstream) -> None:
    # No share of traffic and a floor of 1 retry per 10 s window: one retry, then none.
    budget = RetryBudget(ratio=0.0, min_per_s=0.1, window_s=10.0)
    model = embeddings_model(upstream, retries=3)
    with connect(model, policy=LOCAL, secret=SECRET, budget=budget) as predictor:
        upstream.do(*["503"] * 8)
        with pytest.raises(UpstreamError):
            predictor.embed(["x"])
        assert len(upstream.requests) == 2  # the first attempt and the one retry allowed
        with pytest.raises(UpstreamError):
            predictor.embed(["x"])
        assert len(upstream.requests) == 3  # budget spent: no retry at all


# -- the outbound guard -----------------------------------------------------------------------

def test_remote_url_not_allow_listed_is_refused_at_registration(
        yard: Yard, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(OutboundRefused, match="loopback"):
        yard.register("sneaky", chat_model(upstream), flavor="remote")
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.2, 10.0.0.0/8")  # other entries do not help
    with pytest.raises(OutboundRefused):
        yard.register("sneaky", chat_model(upstream))
    assert yard.models() == [] and upstream.requests == []

    # A key is never sent in clear to the public internet (an IP literal: no DNS needed).
    public = RemoteModel(kind="openai-chat", url="http://8.8.8.8/v1", model="m",
                         api_key_env=KEY_ENV)
    with pytest.raises(ValidationFailed, match="https") as caught:
        check_destination(public, OutboundPolicy())
    assert caught.value.field == "url"
    check_destination(RemoteModel(kind="oip", url="http://8.8.8.8", model="m"),
                      OutboundPolicy())


def test_remote_redirect_to_a_private_address_is_refused(upstream: FakeUpstream) -> None:
    elsewhere = FakeUpstream("127.0.0.2", key=None)
    try:
        target = f"{elsewhere.url}/v1/embeddings"
        with connect(embeddings_model(upstream, retries=2), policy=LOCAL,
                     secret=SECRET) as predictor:
            upstream.do(f"redirect:{target}")
            with pytest.raises(OutboundRefused, match=r"127\.0\.0\.2"):
                predictor.embed(["x"])
        assert elsewhere.requests == []  # refused before connecting

        # Allowed there too: followed, but the key stays with the registered origin, also
        # in a header httpx does not strip by itself.
        both = OutboundPolicy.parse(["127.0.0.1", "127.0.0.2"])
        for header in ("authorization", "x-api-key"):
            model = embeddings_model(upstream, api_key_header=header)
            with connect(model, policy=both, secret=SECRET) as predictor:
                upstream.key = None
                upstream.do(f"redirect:{target}")
                assert predictor.embed(["x"]).vectors.shape == (1, 3)
            assert SECRET in str(upstream.requests[-1].headers)
            assert SECRET not in str(elsewhere.requests[-1].headers)
            assert header not in elsewhere.requests[-1].headers
    finally:
        elsewhere.stop()


# -- secrets ----------------------------------------------------------------------------------

def test_remote_secret_stays_out_of_errors_registry_and_logs(
        yard: Yard, upstream: FakeUpstream, allow_local: None,
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and our own records included
    version = yard.register("guarded", embeddings_model(upstream, retries=1))
    predictor = yard.registry.load_predictor(version)
    assert isinstance(predictor, RemoteEmbeddingsPredictor)
    try:
        assert predictor.embed(["x"]).vectors.shape == (1, 3)
        assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
        upstream.do("echo-key")
        with pytest.raises(UpstreamError, match="<secret>") as caught:
            predictor.embed(["x"])
        upstream_error(caught)
        upstream.do("echo-key-late")  # removed before the message is cut: no prefix either
        with pytest.raises(UpstreamError) as caught:
            predictor.embed(["x"])
        assert SECRET[:7] not in upstream_error(caught).detail
        upstream.do("503", "garbage")  # a retry (logged) and a failure
        with pytest.raises(UpstreamError):
            predictor.embed(["x"])
        assert SECRET not in repr(predictor) and SECRET not in str(predictor.health())
        assert SECRET not in repr(vars(predictor))
    finally:
        predictor.close()  # type: ignore[attr-defined]

    assert "retrying" in caplog.text  # the records exist, without the key
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.args) for r in caplog.records)
    assert SECRET not in json.dumps(version.to_dict(), default=str)
    assert SECRET not in json.dumps(yard.audit_records(), default=str)
    archive = yard.artifacts.materialize(version.artifact_digest)
    spec = (archive / SPEC_FILE).read_text()
    assert KEY_ENV in spec and SECRET not in spec

    # Missing on the server: the load says where it looked, and nothing else.
    yard.register("keyless", RemoteModel(kind="openai-chat", url=f"{upstream.url}/v1",
                                         model="m", api_key_env="NOT_SET_ANYWHERE_X"))
    with pytest.raises(RemoteSecretMissing, match="NOT_SET_ANYWHERE_X, which is not set"):
        yard.predict("keyless", {"prompt": ["hi"]})

    # A key file: read at load time, stripped.
    key_file = tmp_path / "upstream.key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    model = RemoteModel(kind="openai-embeddings", url=f"{upstream.url}/v1", model="e",
                        api_key_file=str(key_file))
    yard.register("from-file", model)
    assert yard.predict("from-file", {"text": ["aa"]})["embedding"].tolist() == [[2, 2, 1]]
    key_file.write_text("two words\n")
    with pytest.raises(RemoteSecretMissing, match="one line of printable") as missing:
        connect(model, policy=LOCAL)
    assert "two words" not in str(missing.value.to_problem())


@pytest.mark.parametrize(("options", "field"), [
    ({"kind": "grpc"}, "kind"),
    ({"url": "ftp://example.com"}, "url"),
    ({"url": "https://user:hunter2@example.com/v1"}, "url"),
    ({"url": "https://example.com/v1?api_key=hunter2"}, "url"),
    ({"model": ""}, "model"),
    ({"api_key_env": "MODELYARD_DATABASE_URL"}, "api_key_env"),
    ({"api_key_env": "NOT A NAME"}, "api_key_env"),
    ({"api_key_file": "relative/key"}, "api_key_file"),
    ({"api_key_env": "K", "api_key_file": "/run/secrets/k"}, "api_key_env"),
    ({"headers": {"Authorization": "Bearer hunter2"}}, "headers.Authorization"),
    ({"headers": {"X-Api-Key": "hunter2"}}, "headers.X-Api-Key"),
    ({"headers": {"x-team": "a\nb"}}, "headers.x-team"),
    ({"api_key_header": "host"}, "api_key_header"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"retries": 11}, "retries"),
    ({"retries": True}, "retries"),
    ({"model_version": "2"}, "model_version"),  # oip only
])
def test_remote_model_refuses_bad_declarations(options: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {"kind": "openai-chat", "url": "https://api.example.com/v1",
                            "model": "m"}
    with pytest.raises(ValidationFailed) as caught:
        RemoteModel(**{**base, **options})
    assert caught.value.field == field
    assert "hunter2" not in str(caught.value.to_problem())


def test_remote_flavor_detects_files_and_refuses_unknown_fields(
        yard: Yard, upstream: FakeUpstream, allow_local: None, tmp_path: Path) -> None:
    folder = tmp_path / "remote-model"
    folder.mkdir()
    (folder / SPEC_FILE).write_text(json.dumps(embeddings_model(upstream).to_spec()))
    assert detect_for_files(folder).name == "remote"
    assert get_flavor("remote").matches_object(embeddings_model(upstream))
    version = yard.register("from-folder", path=folder)
    assert version.flavor == "remote"
    stored = {k: v for k, v in version.flavor_options.items() if k != "input_names"}
    assert RemoteModel.from_spec(stored) == embeddings_model(upstream)

    (folder / SPEC_FILE).write_text(json.dumps({**embeddings_model(upstream).to_spec(),
                                                "api_key": "hunter2"}))
    with pytest.raises(ValidationFailed, match="unknown remote model field 'api_key'"):
        yard.register("typo", path=folder)


# -- OIP v2 upstreams -------------------------------------------------------------------------

def test_remote_oip_fake_upstream_signature_and_bad_shapes(
        yard: Yard, upstream: FakeUpstream, allow_local: None) -> None:
    model = RemoteModel(kind="oip", url=upstream.url, model="summer", api_key_env=KEY_ENV)
    version = yard.register("summer", model)
    assert version.signature.to_dict() == {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
        "outputs": [{"name": "total", "dtype": "float32", "shape": [-1]}]}
    assert upstream.requests[0].method == "GET"
    x = np.array([[1, 2], [3, 4]], dtype=np.float32)
    np.testing.assert_array_equal(yard.predict("summer", x)["total"], [3, 7])

    with connect(model, policy=LOCAL) as predictor:
        assert isinstance(predictor, RemoteOipPredictor)
        assert not isinstance(predictor, ChatModel | Embedder)
        upstream.do("shape")  # one row back for two
        with pytest.raises(UpstreamError, match="not 2 rows") as caught:
            predictor.predict({"x": x})
        upstream_error(caught)
        upstream.do("garbage")
        with pytest.raises(UpstreamError, match="not valid JSON"):
            predictor.predict({"x": x})

    # An explicit signature needs no metadata from the upstream.
    before = len(upstream.requests)
    yard.register("summer", model, signature={
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
        "outputs": [{"name": "total", "dtype": "float32", "shape": [-1]}]})
    assert len(upstream.requests) == before


def test_remote_oip_against_another_modelyard(
        yard: Yard, server: BackgroundServer, admin_key: str, classifier: Any,
        tabular: tuple[np.ndarray, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    x = tabular[0]
    yard.register("churn", classifier, sample=x[:4], to_onnx=True)
    yard.create_endpoint("churn", "churn")  # auth=key: the remote needs a predictor key
    upstream_key = yard.create_key("remote-caller", ["predictor"])["key"]
    monkeypatch.setenv("CHURN_UPSTREAM_KEY", upstream_key)
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1")
    with Client(server.url, admin_key) as client:
        client.wait_ready("churn", timeout_s=30)

        # Without the key, the upstream's 401 is a clean 502 at registration.
        with pytest.raises(UpstreamError, match="answered 401") as caught:
            yard.register("churn-remote", RemoteModel(kind="oip", url=server.url,
                                                      model="churn"))
        assert caught.value.extra["upstream_status"] == 401

        remote = RemoteModel(kind="oip", url=server.url, model="churn",
                             api_key_env="CHURN_UPSTREAM_KEY", timeout_s=10)
        version = yard.register("churn-remote", remote)  # signature from the metadata
        assert [s.to_dict() for s in version.signature.inputs] == [
            {"name": "input", "dtype": "float32", "shape": [-1, 4]}]
        assert {s.name for s in version.signature.outputs} == {"label", "probabilities"}
        out = yard.predict("churn-remote", x[:3])
        np.testing.assert_allclose(out["probabilities"], classifier.predict_proba(x[:3]),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out["label"], classifier.predict(x[:3]))

        # Served by the server itself: a request through the proxy endpoint reaches the
        # upstream endpoint with the key the server read from its environment.
        yard.create_endpoint("churn-proxy", "churn-remote", auth="public")
        client.wait_ready("churn-proxy", timeout_s=30)
        answer = httpx.post(f"{server.url}/v2/models/churn-proxy/infer", json={"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [2, 4],
             "data": x[:2].reshape(-1).tolist()}]}, timeout=10)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (2, 2)),
                                   classifier.predict_proba(x[:2]), rtol=1e-4, atol=1e-5)
        assert upstream_key not in json.dumps(yard.audit_records(), default=str)


def test_remote_predictors_are_protocol_shaped() -> None:
    for cls in (RemoteChatPredictor, RemoteEmbeddingsPredictor, RemoteOipPredictor):
        assert callable(getattr(cls, "predict", None))
    assert issubclass(UpstreamTimeout, UpstreamError)
    assert issubclass(UpstreamError, ModelyardError)
    problem = UpstreamError("x").to_problem()
    assert (problem["code"], problem["status"]) == ("upstream_error", 502)


def test_remote_models_may_name_only_released_secrets(yard: Yard, upstream: FakeUpstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer chooses the URL; if they could also choose any server variable as the key,
    they could have the server send its cloud credentials to their host."""
    monkeypatch.setenv(ALLOW_ENV, "127.0.0.1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-very-secret")
    stealing = RemoteModel(kind="openai-chat", url=f"{upstream.url}/v1", model="m",
                           api_key_env="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RemoteSecretRefused, match=SECRETS_ENV) as refused:
        yard.register("exfiltrate", stealing)
    assert refused.value.field == "api_key_env"
    assert "aws-very-secret" not in str(refused.value.to_problem())
    assert "exfiltrate" not in [m.name for m in yard.models()]
    with pytest.raises(RemoteSecretRefused):  # and at load, if the list shrank meanwhile
        connect(stealing, policy=LOCAL)
    assert all(r.path != "/v1/chat/completions" for r in upstream.requests)
