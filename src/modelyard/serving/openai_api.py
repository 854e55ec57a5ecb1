"""OpenAI-compatible routes over the endpoints, for the official clients and the tools built on
them: ``GET /v1/models``, ``GET /v1/models/{model}``, ``POST /v1/embeddings`` and
``POST /v1/chat/completions`` (``"stream": true`` answers with server-sent events).

The OpenAI ``model`` is an endpoint name. Who may call is decided by the endpoint's own auth
mode, exactly as on /endpoints/{name}/predict: OpenAI clients send ``Authorization: Bearer
<api_key>``, so a Modelyard key (or a JWT, on jwt endpoints) is the api_key. A model chats when
its predictor implements ``ChatModel`` and embeds when it implements ``Embedder``
(flavors/base.py); for python-flavor models, the user's own class may implement them.

Errors stay problem+json documents like on every other route, with the member OpenAI clients
read added: ``{"type", "title", "status", "detail", "code", ..., "error": {"message", "type",
"code", "param"}}``. Unsupported OpenAI features (n > 1, tools, logprobs, token-array input..)
are refused with 422 rather than silently ignored. See
docs/decisions/0009-openai-compatible-api.md.

Generation and embedding run on a small thread pool of their own: never on the event loop, and
never on the default executor the reconciler needs. A non-streamed answer must be complete
within the endpoint's timeout_ms (else 504); a streamed one must produce its first piece
within it, and then runs until max_tokens, a stop, or the client going away, which stops
generation at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import itertools
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from modelyard.backends.base import Backend, EndpointState
from modelyard.domain.errors import (
    DeadlineExceeded,
    EndpointNotFound,
    Forbidden,
    InvalidRequest,
    ModelFailed,
    ModelyardError,
    NotReady,
    Overloaded,
    TooManyRequests,
    ValidationFailed,
)
from modelyard.domain.registry import Endpoint
from modelyard.flavors.base import ChatChunk, ChatModel, Embedder, Embeddings, Predictor
from modelyard.graph.executor import GraphDeployment
from modelyard.rollout.routing import TrafficDeployment
from modelyard.serving import pinning
from modelyard.serving.access import DataPlaneAccess
from modelyard.serving.codecs import dumps, json_response, loads, require_json
from modelyard.serving.deployment import Deployment
from modelyard.serving.problems import loggable
from modelyard.store.keys import KEY_PREFIX

log = logging.getLogger("modelyard.http")

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]
Served = Deployment | GraphDeployment | TrafficDeployment

THREADS = 4  # generations at once: more than the cores only slows each one down
MAX_WAITING = 64  # calls that may queue for a thread; beyond that, 503 at once
MAX_EMBED_INPUTS = 2048  # texts per embeddings call (OpenAI's own limit)
MAX_STOPS = 4
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
VERSION_HEADER = "modelyard-model-version"
_PROBLEM = "application/problem+json"
_END = object()  # the generating thread is done


class _ClientGone(Exception):
    """The caller hung up before the answer was ready: nobody reads what we send."""


# -- errors in both shapes ---------------------------------------------------------------------

def openai_error(exc: ModelyardError) -> dict[str, Any]:
    """The ``error`` object OpenAI clients read (its ``message`` becomes the exception's)."""
    if exc.status >= 500:
        kind = "server_error"
    else:
        kind = {401: "authentication_error", 403: "permission_error",
                429: "rate_limit_error"}.get(exc.status, "invalid_request_error")
    return {"message": exc.detail, "type": kind,
            # OpenAI's own code for an unknown model, which tools look for.
            "code": "model_not_found" if isinstance(exc, EndpointNotFound) else exc.code,
            "param": {"authorization": None, "endpoint": "model"}.get(exc.field or "",
                                                                      exc.field)}


def error_response(exc: ModelyardError, request: Request) -> Response:
    problem = exc.to_problem()
    problem["instance"] = request.url.path
    problem["error"] = openai_error(exc)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="modelyard"'
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, Overloaded):
        headers["Retry-After"] = "1"
    return Response(dumps(problem), status_code=exc.status, media_type=_PROBLEM,
                    headers=headers)


def _answers_openai(handler: Handler) -> Handler:
    """Turn errors into the double-shaped body here, not in the app-wide handler, which
    knows nothing of OpenAI's ``error`` object."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except _ClientGone:
            return Response(status_code=499)  # nginx's "client closed request"
        except ModelyardError as exc:
            if exc.status >= 500:
                log.error("%s %s -> %s: %s", request.method, request.url.path, exc.code,
                          loggable(exc.detail))
            return error_response(exc, request)

    return run


# -- the thread pool ---------------------------------------------------------------------------

class _Pool:
    """The threads that generate and embed, with a bounded number of calls waiting."""

    def __init__(self, threads: int, waiting: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="modelyard-openai")
        self.slots = threading.BoundedSemaphore(threads + waiting)

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        if not self.slots.acquire(blocking=False):
            raise Overloaded("too many generations are running or waiting; retry later")

        def run() -> T:
            try:
                return fn()
            finally:
                self.slots.release()

        try:
            return self.executor.submit(run)
        except BaseException:
            self.slots.release()
            raise


def _guarded(ref: str, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` with the model's own failures turned into ModelFailed (a 500)."""

    def run() -> T:
        try:
            return fn()
        except ModelyardError:
            raise
        except Exception as exc:  # the model's own failure: a server-side error
            log.exception("%s failed", ref)
            raise ModelFailed(f"{ref} failed: {type(exc).__name__}: {exc}") from exc

    return run


async def _disconnected(receive: Receive, cancel: threading.Event) -> None:
    """Wait for the client to hang up (the body is read already), then stop the work."""
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel.set()


async def _settle(pending: asyncio.Future[T], timeout_s: float, cancel: threading.Event,
                  receive: Receive) -> T:
    """The result of ``pending``, unless the deadline passes or the client hangs up first:
    then ``cancel`` is set, which stops the thread at its next step."""
    gone = asyncio.ensure_future(_disconnected(receive, cancel))
    waiting: set[asyncio.Future[Any]] = {pending, gone}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not pending.done():
            cancel.set()
            pending.cancel()
    if pending in done:
        return pending.result()
    if gone in done:
        raise _ClientGone
    raise DeadlineExceeded(f"no answer within {timeout_s * 1000:.0f} ms (the endpoint's "
                           "timeout_ms)")


# -- streaming ---------------------------------------------------------------------------------

class _Chunks:
    """Chat chunks from the generating thread to the event loop, through an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancel = threading.Event()

    def produce(self, chat: Callable[[], Iterator[ChatChunk]], ref: str) -> None:
        """Runs on the pool: every chunk, or the error, then _END."""
        chunks: Iterator[ChatChunk] | None = None
        try:
            chunks = chat()
            for chunk in chunks:
                if self.cancel.is_set():
                    break
                self._put(chunk)
        except ModelyardError as exc:
            self._put(exc)
        except Exception as exc:  # the model's own failure: a server-side error
            log.exception("%s failed", ref)
            self._put(ModelFailed(f"{ref} failed: {type(exc).__name__}: {exc}"))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a generator stops before its next token
            self._put(_END)

    def _put(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is stopping
            self.cancel.set()


class _EventStream(Response):
    """Server-sent events from an async generator. Whatever the ASGI server does when the
    client goes away (a disconnect message, or an error on send), generation is told to stop
    and the generator is closed."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], cancel: threading.Event,
                 headers: Mapping[str, str]) -> None:
        self.events = events
        self.cancel = cancel
        self.status_code = 200
        self.background = None
        # no-store: never cached; x-accel-buffering: proxies must pass each event at once.
        self.init_headers({"cache-control": "no-store", "x-accel-buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive, self.cancel))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async for event in self.events:
                if gone.done():
                    break
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away (servers speaking ASGI 2.4 raise on send)
        finally:
            self.cancel.set()
            gone.cancel()
            await self.events.aclose()


def _sse(payload: Any) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


# -- request bodies ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    options: dict[str, Any]  # max_tokens, temperature, top_p, stop, seed (given ones only)
    stream: bool = False
    include_usage: bool = False


# Features that would change the answer, and when a request uses them.
_UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": bool, "functions": bool, "logit_bias": bool,
    "logprobs": lambda v: v is True,
    "top_logprobs": lambda v: v is not None,
    "response_format": lambda v: v is not None and v != {"type": "text"},
    "presence_penalty": lambda v: v not in (None, 0),
    "frequency_penalty": lambda v: v not in (None, 0),
    "audio": lambda v: v is not None,
    "prediction": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
}


def parse_chat(body: Mapping[str, Any]) -> ChatRequest:
    """The parts of an OpenAI chat request Modelyard honours; other fields (user, store,
    metadata..) are ignored, so newer clients keep working."""
    for name, used in _UNSUPPORTED.items():
        if used(body.get(name)):
            raise ValidationFailed(f"{name} is not supported by Modelyard's chat completions",
                                   field=name)
    if body.get("n") not in (None, 1):
        raise ValidationFailed("n > 1 is not supported: ask once per answer", field="n")
    stream = _flag(body.get("stream"), "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ValidationFailed("stream_options must be an object", field="stream_options")
    include_usage = _flag(stream_options.get("include_usage"), "stream_options.include_usage")
    return ChatRequest(messages=parse_messages(body.get("messages")),
                       options=_sampling(body), stream=stream, include_usage=include_usage)


def _flag(value: Any, name: str) -> bool:
    if value is not None and not isinstance(value, bool):
        raise ValidationFailed(f"{name} must be true or false", field=name)
    return bool(value)


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    # Newer clients send max_completion_tokens; max_tokens is its older name.
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    options = {"max_tokens": body.get(name), "temperature": body.get("temperature"),
               "top_p": body.get("top_p"), "stop": body.get("stop"), "seed": body.get("seed")}
    _check_int(options["max_tokens"], name, low=1)
    _check_int(options["seed"], "seed")
    for key, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = options[key]
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, int | float) or not 0 <= value <= high):
            raise ValidationFailed(f"{key} must be a number from 0 to {high:g}", field=key)
    stop = options["stop"]
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and (not isinstance(stops, list) or len(stops) > MAX_STOPS or
                              not all(isinstance(s, str) and s for s in stops)):
        raise ValidationFailed(f"stop must be a string or a list of at most {MAX_STOPS} "
                               "non-empty strings", field="stop")
    return {k: v for k, v in options.items() if v is not None}


def _check_int(value: Any, name: str, low: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or \
            (low is not None and value < low):
        rule = f"an integer of at least {low}" if low is not None else "an integer"
        raise ValidationFailed(f"{name} must be {rule}", field=name)


def parse_messages(value: Any) -> list[dict[str, str]]:
    """OpenAI messages as plain ``{"role", "content"}`` text; ``developer`` is read as
    ``system`` (chat templates know only the older name)."""
    if not isinstance(value, list) or not value:
        raise ValidationFailed("messages must be a non-empty list", field="messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ValidationFailed(f"{where} must be an object", field=where)
        role = message.get("role")
        if role not in ROLES:
            raise ValidationFailed(f"{where}.role must be one of {', '.join(sorted(ROLES))}",
                                   field=f"{where}.role")
        if message.get("tool_calls") or message.get("function_call"):
            raise ValidationFailed("tool calls are not supported", field=f"{where}.tool_calls")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": _content(message.get("content"), f"{where}.content")})
    return out


def _content(value: Any, where: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            return "\n".join(p["text"] for p in value)
        raise ValidationFailed("only text content parts are supported", field=where)
    raise ValidationFailed("content must be a string or a list of text parts", field=where)


def parse_embedding_input(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValidationFailed("input must be a string or a non-empty list of strings",
                               field="input")
    if not all(isinstance(v, str) for v in value):
        if all(isinstance(v, int | list) and not isinstance(v, bool) for v in value):
            raise ValidationFailed("token arrays are not supported as input; send the text",
                                   field="input")
        raise ValidationFailed("input must be a string or a list of strings", field="input")
    if len(value) > MAX_EMBED_INPUTS:
        raise ValidationFailed(f"at most {MAX_EMBED_INPUTS} inputs per call", field="input")
    if not all(value):
        raise ValidationFailed("input must not contain empty strings", field="input")
    return list(value)


def _encoding(body: Mapping[str, Any]) -> str:
    value = body.get("encoding_format") or "float"
    if value not in ("float", "base64"):
        raise ValidationFailed("encoding_format must be float or base64",
                               field="encoding_format")
    return str(value)


async def _json(request: Request) -> dict[str, Any]:
    require_json(request)
    body = loads(await request.body())
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    return body


# -- answers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Completion:
    """What every object of one chat answer repeats."""

    model: str
    ref: str  # the version that answered, as system_fingerprint
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": self.ref}

    def whole(self, text: str, last: ChatChunk | None) -> dict[str, Any]:
        return {**self.head("chat.completion"), "choices": [{
            "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None, "finish_reason": _finish(last)}], "usage": _usage(last)}

    def delta(self, delta: dict[str, Any], finish: str | None = None,
              usage: bool = False) -> bytes:
        chunk = {**self.head("chat.completion.chunk"), "choices": [{
            "index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if usage:
            chunk["usage"] = None  # present, and null, on every chunk but the last
        return _sse(chunk)

    def usage(self, last: ChatChunk | None) -> bytes:
        return _sse({**self.head("chat.completion.chunk"), "choices": [],
                     "usage": _usage(last)})


def _finish(last: ChatChunk | None) -> str:
    return (last.finish_reason if last is not None else None) or "stop"


def _usage(last: ChatChunk | None) -> dict[str, int]:
    prompt = last.prompt_tokens if last is not None else 0
    completion = last.completion_tokens if last is not None else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _collect(chunks: Iterator[ChatChunk], cancel: threading.Event
             ) -> tuple[str, ChatChunk | None]:
    """A whole answer, and its last chunk (finish reason and counts). Runs on the pool."""
    text, last = [], None
    try:
        for chunk in chunks:
            if cancel.is_set():
                break
            text.append(chunk.text)
            last = chunk if chunk.finish_reason is not None else last
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return "".join(text), last


def _vectors(result: Embeddings, count: int, ref: str) -> np.ndarray:
    vectors = np.asarray(result.vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise ModelFailed(f"{ref} returned embeddings of shape {list(vectors.shape)} for "
                          f"{count} inputs")
    return vectors


def _vector(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":  # little-endian float32, as the OpenAI clients decode it
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return vector.tolist()


def _speakers(predictor: Predictor | None) -> list[object]:
    """What may speak ChatModel or Embedder for a predictor: the predictor itself, or, for
    python-flavor models, the user's instance it wraps."""
    if predictor is None:
        return []
    inner = getattr(predictor, "instance", None)
    return [predictor] if inner is None else [predictor, inner]


def chat_model(predictor: Predictor | None) -> ChatModel | None:
    return next((s for s in _speakers(predictor) if isinstance(s, ChatModel)), None)


def embedder(predictor: Predictor | None) -> Embedder | None:
    return next((s for s in _speakers(predictor) if isinstance(s, Embedder)), None)


def _bearer(header: str) -> str:
    return header.partition(" ")[2].strip()


# -- the routes --------------------------------------------------------------------------------

class OpenAIRoutes:
    def __init__(self, backend: Backend, access: DataPlaneAccess, threads: int = THREADS,
                 waiting: int = MAX_WAITING) -> None:
        self.backend = backend
        self.access = access
        self.pool = _Pool(threads, waiting)
        self._turn = itertools.count()  # round robin over a deployment's replicas

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", _answers_openai(self.models), methods=["GET"]),
            Route("/v1/models/{model}", _answers_openai(self.model), methods=["GET"]),
            Route("/v1/embeddings", _answers_openai(self.embeddings), methods=["POST"]),
            Route("/v1/chat/completions", _answers_openai(self.chat_completions),
                  methods=["POST"]),
        ]

    # models -------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        """The endpoints this caller may call that chat or embed (anonymous: public ones)."""
        may_call = self._caller(request)
        data = [_model_object(s.endpoint) for s in sorted(self.backend.states(),
                                                          key=lambda s: s.endpoint.name)
                if s.deployment is not None and _speaks_openai(s.deployment)
                and may_call(s.endpoint)]
        return json_response({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        """One endpoint as an OpenAI model object, if this caller may call it."""
        name = request.path_params["model"]
        state = self._state(name, request)
        if state.deployment is None or not _speaks_openai(state.deployment):
            raise EndpointNotFound(f"endpoint {name!r} serves no chat or embedding model",
                                   field="model")
        return json_response(_model_object(state.endpoint))

    def _caller(self, request: Request) -> Callable[[Endpoint], bool]:
        """Which endpoints this caller may call, without spending their rate limit: one
        check of the credential, then each endpoint's auth mode and project."""
        header = request.headers.get("authorization")
        if not header:
            return lambda endpoint: endpoint.auth == "public"
        try:  # a wrong credential is a 401, as anywhere
            principal = self.access.check_action(header.encode("latin-1"), "predict",
                                                 "openai:models")
        except Forbidden:
            return lambda endpoint: endpoint.auth == "public"
        # check_action reads keys by their prefix, anything else as a JWT (if configured).
        mode = "key" if _bearer(header).startswith(KEY_PREFIX) or \
            self.access.tokens is None else "jwt"
        return lambda endpoint: endpoint.auth == "public" or (
            endpoint.auth == mode and principal.may("predict", endpoint.project))

    # embeddings ---------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        """OpenAI embeddings from an embedder endpoint (``model`` is the endpoint's name)."""
        body = await _json(request)
        state, deployment = self._target(body, request)
        texts = parse_embedding_input(body.get("input"))
        encoding = _encoding(body)
        dimensions = body.get("dimensions")
        _check_int(dimensions, "dimensions", low=1)
        model = embedder(self._predictor(deployment))
        if model is None:
            raise _cannot(deployment, "embed", "/v1/embeddings", "Embedder")
        ref = deployment.version.ref
        cancel = threading.Event()
        future = self.pool.submit(_guarded(ref, lambda: model.embed(texts)))
        result = await _settle(asyncio.wrap_future(future), _timeout_s(state), cancel,
                               request.receive)
        vectors = _vectors(result, len(texts), ref)
        if dimensions is not None and dimensions != vectors.shape[1]:
            raise ValidationFailed(f"{state.endpoint.name} makes {vectors.shape[1]}-dimensional "
                                   "vectors and cannot shorten them", field="dimensions")
        return json_response({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _vector(v, encoding)}
                     for i, v in enumerate(vectors)],
            "model": state.endpoint.name,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }, headers={VERSION_HEADER: ref})

    # chat ---------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        """OpenAI chat completions from a chat endpoint, streamed as server-sent events when
        asked (``model`` is the endpoint's name)."""
        body = await _json(request)
        state, deployment = self._target(body, request)
        chat = parse_chat(body)
        model = chat_model(self._predictor(deployment))
        if model is None:
            raise _cannot(deployment, "chat", "/v1/chat/completions", "ChatModel")
        answer = _Completion(state.endpoint.name, deployment.version.ref)
        if chat.stream:
            return await self._stream(lambda: model.chat(chat.messages, chat.options), answer,
                                      chat, state, request)
        cancel = threading.Event()
        # Guard the whole loop: a generator fails while iterated, not when called.
        future = self.pool.submit(_guarded(answer.ref, lambda: _collect(
            model.chat(chat.messages, chat.options), cancel)))
        text, last = await _settle(asyncio.wrap_future(future), _timeout_s(state), cancel,
                                   request.receive)
        return json_response(answer.whole(text, last), headers={VERSION_HEADER: answer.ref})

    async def _stream(self, run: Callable[[], Iterator[ChatChunk]], answer: _Completion,
                      chat: ChatRequest, state: EndpointState, request: Request) -> Response:
        chunks = _Chunks(asyncio.get_running_loop())
        self.pool.submit(lambda: chunks.produce(run, answer.ref))
        # The status line waits for the first piece: a refusal (a prompt over the context:
        # 413) or the deadline is still an HTTP error, not an event inside a 200.
        first = await _settle(asyncio.ensure_future(chunks.queue.get()), _timeout_s(state),
                              chunks.cancel, request.receive)
        if isinstance(first, ModelyardError):
            raise first
        events = self._events(first, chunks, answer, chat.include_usage)
        return _EventStream(events, chunks.cancel, {VERSION_HEADER: answer.ref})

    @staticmethod
    async def _events(first: object, chunks: _Chunks, answer: _Completion,
                      include_usage: bool) -> AsyncGenerator[bytes, None]:
        yield answer.delta({"role": "assistant", "content": ""}, usage=include_usage)
        item, last = first, None
        while item is not _END:
            if isinstance(item, ModelyardError):  # failed midway: OpenAI's error event
                log.error("stream of %s failed: %s", answer.ref, loggable(item.detail))
                yield _sse({"error": openai_error(item)})
                return
            assert isinstance(item, ChatChunk)
            if item.finish_reason is not None:
                last = item
            if item.text or item.finish_reason is not None:
                yield answer.delta({"content": item.text} if item.text else {},
                                   item.finish_reason, usage=include_usage)
            item = await chunks.queue.get()
        if include_usage:
            yield answer.usage(last)
        yield b"data: [DONE]\n\n"

    # shared -------------------------------------------------------------------------------
    def _state(self, name: str, request: Request) -> EndpointState:
        state = self.backend.state(name)
        if state is None:
            raise EndpointNotFound(f"model {name!r} does not exist (models are endpoint "
                                   "names; GET /v1/models lists them)", field="model")
        header = request.headers.get("authorization")
        self.access.check(state.endpoint, header.encode("latin-1") if header else None)
        return state

    def _target(self, body: Mapping[str, Any], request: Request
                ) -> tuple[EndpointState, Served]:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ValidationFailed("model must be the name of an endpoint", field="model")
        state = self._state(name, request)
        if state.deployment is None:
            raise NotReady(f"endpoint {name!r} is {state.status}"
                           + (f": {state.error}" if state.error else ""))
        pinned = request.headers.get(pinning.PIN_HEADER)
        if pinned is None:
            return state, state.deployment
        # A version named in Modelyard-Version: the rule of every protocol (serving.pinning).
        return state, pinning.choose(name, state.deployment,
                                     [pinning.Named(pinning.PIN_HEADER, pinned)],
                                     lambda: self._may_pin(request, state))

    def _may_pin(self, request: Request, state: EndpointState) -> bool:
        header = request.headers.get("authorization")
        caller = self.access.identify(header.encode("latin-1") if header else None)
        return caller is not None and caller.may(pinning.PIN_RIGHT, state.endpoint.project)

    def _predictor(self, deployment: Served) -> Predictor | None:
        """One replica's predictor, in turn (graphs have none of their own)."""
        predictors = getattr(deployment, "predictors", None)
        return predictors[next(self._turn) % len(predictors)] if predictors else None


def _cannot(deployment: Served, verb: str, route: str, protocol: str) -> ValidationFailed:
    version = deployment.version
    return ValidationFailed(f"{version.ref} (flavor {version.flavor}) cannot {verb}; {route} "
                            f"needs a model that implements {protocol} "
                            "(modelyard.flavors.base)", field="model")


def _speaks_openai(deployment: Served) -> bool:
    predictors = getattr(deployment, "predictors", None) or [None]
    return chat_model(predictors[0]) is not None or embedder(predictors[0]) is not None


def _model_object(endpoint: Endpoint) -> dict[str, Any]:
    return {"id": endpoint.name, "object": "model",
            "created": int(endpoint.created_at.timestamp()), "owned_by": "modelyard"}


def _timeout_s(state: EndpointState) -> float:
    return state.endpoint.timeout_ms / 1000
