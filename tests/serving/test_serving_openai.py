"""The OpenAI-compatible routes, proven with the official ``openai`` client against the real
server: a tiny GPT-2 built here (causal_lm flavor) chats, streamed or not, with usage counts;
a python-flavor embedder embeds; refusals arrive as the client's own exception types. Also the
causal_lm flavor itself: its trust rules, and predict over OIP v2 (BYTES in and out)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard import Yard
from modelyard.domain.errors import InvalidArtifact, UntrustedArtifact
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.testing.models import SlowChatter, WordHashEmbedder
from support import assert_problem

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

CONTEXT = 64  # the tiny model's context, in tokens
TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
HELLO = [{"role": "user", "content": "hello world"}]
CORPUS = ["hello world, the quick brown fox jumps over the lazy dog",
          "user: hi there assistant: hello, how can I help you today?",
          "system: you are a small model. keep answers short."]


def tiny_lm(template: bool = True) -> tuple[Any, Any]:
    """A 2-layer GPT-2 over a byte-level BPE vocabulary trained on three sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>",
                                        bos_token="<|end|>")
    if template:
        tokenizer.chat_template = TEMPLATE
    end = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=end, eos_token_id=end)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval(), tokenizer


def greedy(model: Any, tokenizer: Any, ids: list[int], new: int) -> tuple[str, list[int]]:
    """What transformers' own generate() makes of a prompt: the reference answer."""
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                             dtype=torch.long), max_new_tokens=new, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    tokens = out[0, len(ids):].tolist()
    return tokenizer.decode(tokens, skip_special_tokens=True), tokens


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


class Served:
    def __init__(self, server: BackgroundServer, key: str, lm: tuple[Any, Any]) -> None:
        self.server, self.key, self.lm = server, key, lm

    def client(self, key: str | None = None) -> Any:
        # No retries: a 5xx must reach the test once, not three times.
        return openai.OpenAI(base_url=self.server.url + "/v1", api_key=key or self.key,
                             max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One yard and server for the module (SQLite): ``chat`` (the tiny LM, auth=key),
    ``public-chat`` (the same, public), ``embed`` (a python-flavor Embedder), ``echo`` (a
    model that neither chats nor embeds) and ``slow`` (a ChatModel that ticks every 10 ms,
    timeout 300 ms)."""
    home = tmp_path_factory.mktemp("openai-yard")
    settings = Settings.load(home, env={}, database_url=f"sqlite:///{home / 'yard.db'}")
    yard, _ = Yard.init(settings=settings)
    try:
        lm = tiny_lm()
        yard.register("tiny", lm, flavor="causal_lm")
        yard.register("words", WordHashEmbedder, flavor="python", trusted=True,
                      sample=np.array(["hello world"], dtype=object))
        yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                      sample=np.ones((1, 2), dtype=np.float32))
        yard.register("slow", SlowChatter, flavor="python", trusted=True,
                      sample=np.ones((1, 1), dtype=np.float32))
        yard.create_endpoint("chat", "tiny")
        yard.create_endpoint("public-chat", "tiny", auth="public")
        yard.create_endpoint("embed", "words")
        yard.create_endpoint("echo", "echo")
        yard.create_endpoint("slow", "slow", auth="public", timeout_ms=300)
        key = yard.create_key("app", ["predictor"])["key"]
        with BackgroundServer(yard) as server:
            yield Served(server, key, lm)
    finally:
        yard.close()


# -- models ------------------------------------------------------------------------------------

def test_openai_models_lists_what_the_caller_may_call(served: Served) -> None:
    client = served.client()
    assert {m.id for m in client.models.list()} == {"chat", "public-chat", "embed", "slow"}
    listed = client.models.retrieve("chat")
    assert (listed.id, listed.object, listed.owned_by) == ("chat", "model", "modelyard")
    with httpx.Client(base_url=served.server.url, timeout=30) as anonymous:
        body = anonymous.get("/v1/models").json()
        assert body["object"] == "list"
        assert {m["id"] for m in body["data"]} == {"public-chat", "slow"}
        assert_problem(anonymous.get("/v1/models/chat"), 401, "unauthenticated")
    with pytest.raises(openai.AuthenticationError):
        served.client("my_000000000000.wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("echo")  # serves a model that neither chats nor embeds


# -- chat --------------------------------------------------------------------------------------

def test_openai_chat_completion_matches_generate_and_counts_usage(served: Served) -> None:
    model, tokenizer = served.lm
    prompt = chat_ids(tokenizer, HELLO)
    expected, tokens = greedy(model, tokenizer, prompt, 5)
    assert tokenizer.eos_token_id not in tokens  # so the answer must end by length
    answer = served.client().chat.completions.create(
        model="chat", messages=HELLO, max_tokens=5, temperature=0)
    assert answer.object == "chat.completion" and answer.model == "chat"
    choice = answer.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", expected)
    assert choice.finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens,
            answer.usage.total_tokens) == (len(prompt), 5, len(prompt) + 5)
    assert answer.system_fingerprint == "tiny:1"


def test_openai_chat_streams_the_same_answer_with_usage(served: Served) -> None:
    client = served.client()
    whole = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=8,
                                           temperature=0)
    stream = client.chat.completions.create(
        model="chat", messages=HELLO, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    # Without include_usage, no usage chunk.
    plain = list(client.chat.completions.create(model="chat", messages=HELLO, max_tokens=3,
                                                stream=True, temperature=0))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)


def test_openai_chat_stop_strings_seed_and_sampling(served: Served) -> None:
    client = served.client()
    full = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=12,
                                          temperature=0).choices[0].message.content
    assert full and len(full) >= 3
    stop = full[1:3]
    cut = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=12,
                                         temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[:full.index(stop)]
    streamed = list(client.chat.completions.create(
        model="chat", messages=HELLO, max_tokens=12, temperature=0, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[:full.index(stop)]

    def sampled(seed: int) -> str | None:
        return client.chat.completions.create(
            model="chat", messages=HELLO, max_tokens=12, temperature=1.5, top_p=0.95,
            seed=seed).choices[0].message.content

    assert sampled(7) == sampled(7)  # a seed makes sampling repeatable


def test_openai_chat_refusals(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.AuthenticationError):
        served.client("my_000000000000.wrong").chat.completions.create(
            model="chat", messages=HELLO)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    with pytest.raises(openai.UnprocessableEntityError) as many:
        client.chat.completions.create(model="chat", messages=HELLO, n=2)
    assert many.value.param == "n"
    with pytest.raises(openai.UnprocessableEntityError) as echo:
        client.chat.completions.create(model="echo", messages=HELLO)
    assert "cannot chat" in echo.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="chat", messages=HELLO, max_tokens=0)
    with pytest.raises(openai.UnprocessableEntityError) as image:
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:,"}}]}])
    assert image.value.param == "messages[0].content"


def test_openai_prompt_over_the_context_is_413(served: Served) -> None:
    client = served.client()
    long = [{"role": "user", "content": "hello world " * CONTEXT}]
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="chat", messages=long, stream=stream)
        assert refused.value.status_code == 413
        assert refused.value.code == "payload_too_large"
    with httpx.Client(base_url=served.server.url, timeout=30) as http:
        raw = http.post("/v1/chat/completions", json={"model": "chat", "messages": long},
                        headers={"authorization": f"Bearer {served.key}"})
    # One body, both shapes: problem+json for Modelyard tools, "error" for OpenAI clients.
    body = assert_problem(raw, 413, "payload_too_large", "messages")
    assert body["error"] == {"message": body["detail"], "type": "invalid_request_error",
                             "code": "payload_too_large", "param": "messages"}


def test_openai_deadline_and_disconnect_stop_generation(served: Served) -> None:
    client = served.client()
    SlowChatter.stopped.clear()
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as late:
        client.chat.completions.create(model="slow", messages=HELLO, max_tokens=1000)
    assert late.value.status_code == 504 and time.monotonic() - started < 5
    _wait_for(lambda: len(SlowChatter.stopped) == 1)
    assert SlowChatter.stopped[0] < 100  # stopped long before its 1000 ticks
    with httpx.Client(base_url=served.server.url, timeout=30) as http, http.stream(
            "POST", "/v1/chat/completions", json={"model": "slow", "messages": HELLO,
                                                  "max_tokens": 1000, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    _wait_for(lambda: len(SlowChatter.stopped) == 2)  # the client left: generation stopped
    assert SlowChatter.stopped[1] < 300


def _wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- embeddings --------------------------------------------------------------------------------

def test_openai_embeddings(served: Served) -> None:
    client = served.client()
    texts = ["hello world", "the quick brown fox"]
    expected = WordHashEmbedder().embed(texts).vectors
    for encoding in ("base64", "float"):  # the client asks for base64 unless told
        kwargs = {"encoding_format": encoding} if encoding == "float" else {}
        answer = client.embeddings.create(model="embed", input=texts, **kwargs)
        assert answer.model == "embed" and [d.index for d in answer.data] == [0, 1]
        np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), expected,
                                   rtol=1e-6)
        assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (6, 6)
    one = client.embeddings.create(model="embed", input="hello world")
    assert len(one.data) == 1 and len(one.data[0].embedding) == WordHashEmbedder.dims
    with pytest.raises(openai.UnprocessableEntityError) as tokens:
        client.embeddings.create(model="embed", input=[[1, 2, 3]])
    assert "not supported" in tokens.value.message
    with pytest.raises(openai.UnprocessableEntityError) as chat:
        client.embeddings.create(model="chat", input="hello")
    assert "cannot embed" in chat.value.message
    with pytest.raises(openai.AuthenticationError):
        served.client("my_000000000000.wrong").embeddings.create(model="embed", input="x")


# -- the causal_lm flavor ----------------------------------------------------------------------

def test_causal_lm_predict_over_oip_v2_and_plain_json(served: Served) -> None:
    model, tokenizer = served.lm
    prompts = ["hello world", "the quick brown"]
    expected = [greedy(model, tokenizer, tokenizer(p)["input_ids"],
                       min(64, CONTEXT - len(tokenizer(p)["input_ids"])))[0] for p in prompts]
    headers = {"authorization": f"Bearer {served.key}"}
    with httpx.Client(base_url=served.server.url, timeout=30, headers=headers) as http:
        meta = http.get("/v2/models/chat").json()
        assert meta["inputs"] == [{"name": "prompt", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "completion", "datatype": "BYTES", "shape": [-1]}]
        r = http.post("/v2/models/chat/infer", json={"inputs": [
            {"name": "prompt", "datatype": "BYTES", "shape": [2], "data": prompts}]})
        assert r.status_code == 200, r.text
        (out,) = r.json()["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("completion", "BYTES", [2])
        assert out["data"] == expected
        plain = http.post("/endpoints/chat/predict", json={"inputs": prompts[:1]})
        assert plain.json()["outputs"]["completion"] == expected[:1]
        too_long = http.post("/endpoints/chat/predict", json={"inputs": ["hello " * CONTEXT]})
        assert_problem(too_long, 413, "payload_too_large", "prompt")


def test_causal_lm_flavor_files_and_trust(tmp_path: Path) -> None:
    from modelyard.flavors import detect_for_files, detect_for_object, get

    flavor = get("causal_lm")
    model, tokenizer = tiny_lm(template=False)
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    assert flavor.matches_object((model, tokenizer)) and flavor.matches_object(pipe)
    assert not flavor.matches_object(model) and not flavor.matches_object((model, model))
    assert detect_for_object((model, tokenizer)).name == "causal_lm"
    folder = tmp_path / "lm"
    folder.mkdir()
    flavor.save(pipe, folder, sample=None)
    assert flavor.matches_files(folder) and detect_for_files(folder).name == "causal_lm"
    options = flavor.inspect(folder, trusted=False)
    assert options["architecture"] == "GPT2LMHeadModel" and options["context"] == CONTEXT
    assert (options["weights"], options["custom_code"]) == ("safetensors", False)
    # Without a chat template: "role: content" lines, then "assistant:".
    predictor: Any = flavor.load(folder, options, trusted=False)
    rendered = tokenizer.decode(predictor.chat_ids([{"role": "system", "content": "be brief"},
                                                    {"role": "user", "content": "hi"}]))
    assert rendered == "system: be brief\nuser: hi\nassistant:"
    chunks = list(predictor.chat(HELLO, {"max_tokens": 3, "temperature": 0}))
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 3
    assert all(c.finish_reason is None for c in chunks[:-1])

    # Custom code (auto_map) and pickled weights need trust.
    config = json.loads((folder / "config.json").read_text())
    custom = tmp_path / "custom"
    shutil.copytree(folder, custom)
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}}))
    with pytest.raises(UntrustedArtifact):
        flavor.inspect(custom, trusted=False)
    assert flavor.inspect(custom, trusted=True)["custom_code"] is True
    with pytest.raises(UntrustedArtifact):
        flavor.load(custom, {**options, "custom_code": True}, trusted=False)
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UntrustedArtifact):
        flavor.inspect(pickled, trusted=False)
    assert flavor.inspect(pickled, trusted=True)["weights"] == "pickle"
    # Not a causal LM.
    (pickled / "config.json").write_text(json.dumps({**config,
                                                     "architectures": ["BertModel"]}))
    assert not flavor.matches_files(pickled)
    with pytest.raises(InvalidArtifact):
        flavor.inspect(pickled, trusted=True)
