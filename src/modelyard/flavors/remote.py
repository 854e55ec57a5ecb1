"""Remote models: a version that is a call to an upstream service.

Three kinds of upstream:

- ``openai-chat``: an OpenAI-compatible ``/chat/completions`` API. ``predict({"prompt": BYTES
  [n]}) -> {"completion": BYTES [n]}`` (one upstream call per row) and ``chat()``, streamed
  from the upstream's server-sent events.
- ``openai-embeddings``: an OpenAI-compatible ``/embeddings`` API. ``predict({"text": BYTES
  [n]}) -> {"embedding": FP32 [n, d]}`` (one upstream call per batch) and ``embed()``.
- ``oip``: an Open Inference Protocol v2 server (another Modelyard, Triton, KServe).
  ``predict(arrays) -> arrays`` as JSON tensors; the signature comes from the upstream's model
  metadata at registration, unless one is given.

Security (SECURITY.md): the developer fixes the upstream URL and the *name* of the secret at
registration, in ``remote.json`` inside the (content-addressed, signable) artifact. The secret's
*value* is read when the version is loaded, from the server's environment or a file, and lives
only in the predictor: never in the registry, logs or error messages. No request can choose
the host. The URL is checked by the outbound guard at registration, and every connection
(redirects included) is checked again at connect time by ``guarded_client``; the allow-list is
the ``outbound_allow`` setting, read from ``MODELYARD_OUTBOUND_ALLOW`` (see ``outbound_policy``).

Resilience: one pooled client per predictor, a timeout per attempt, retries with full-jitter
backoff only for failures where nothing was answered yet (connect errors, timeouts, 500, 502,
503, 504; never 4xx) and only while the retry budget allows, and a circuit breaker per predictor
that refuses at once (503 ``circuit_open``) after consecutive failed calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import numpy as np
import orjson

from modelyard.domain.errors import (
    InvalidArtifact,
    InvalidInput,
    ModelyardError,
    ValidationFailed,
    reject_unknown,
)
from modelyard.domain.signature import OIP_TO_DTYPE, Signature, TensorSpec
from modelyard.domain.tensors import decode_many, to_jsonable
from modelyard.flavors.base import Arrays, ChatChunk, Embeddings, Predictor
from modelyard.governance.outbound import OutboundPolicy, check_url, classify, guarded_client
from modelyard.serving.resilience import CircuitBreaker, RetryBudget, backoff_s

__all__ = ["ALLOW_ENV", "KINDS", "SPEC_FILE", "RemoteChatPredictor",
           "RemoteEmbeddingsPredictor", "RemoteFlavor", "RemoteModel", "RemoteOipPredictor",
           "RemotePredictor", "RemoteSecretMissing", "UpstreamError", "UpstreamTimeout",
           "connect", "outbound_policy", "read_secret"]

log = logging.getLogger("modelyard.remote")

SPEC_FILE = "remote.json"
KINDS = ("openai-chat", "openai-embeddings", "oip")
# The ``outbound_allow`` setting as the environment carries it (see ``outbound_policy``).
ALLOW_ENV = "MODELYARD_OUTBOUND_ALLOW"
SECRETS_ENV = "MODELYARD_REMOTE_SECRETS"

# Answers worth another attempt: the upstream (or a proxy in front of it) failed before doing
# anything we could use. 500 is included because inference servers and OpenAI answer it for
# transient faults, and OpenAI's own client retries it.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_ANSWER_BYTES = 64 << 20  # a broken or hostile upstream must not exhaust our memory
MAX_SPEC_BYTES = 64 << 10
MAX_SECRET_BYTES = 4096
SNIPPET_CHARS = 200
CHAT_OPTIONS = ("max_tokens", "temperature", "top_p", "stop", "seed")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_VISIBLE = re.compile(r"^[\x21-\x7e]+$")  # one token: printable ASCII, no spaces
# Header (and query parameter) names that carry credentials. Such values would be stored in
# the registry in clear, so they are refused; the secret goes through api_key_env/file.
_SENSITIVE = re.compile(r"auth|key|token|secret|passw|cookie|session|credential|signature",
                        re.IGNORECASE)
# Headers the client sets itself; letting a spec set them would confuse the upstream.
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "transfer-encoding",
                               "connection", "te", "upgrade", "accept-encoding",
                               "proxy-authorization", "authorization", "cookie"})


# -- errors -----------------------------------------------------------------------------------

class UpstreamError(ModelyardError):
    """The upstream failed, refused, or answered something unusable."""

    code, status, title = "upstream_error", 502, "Upstream failed"
    # Whether this counts against the upstream's health (the circuit breaker). A 4xx means the
    # upstream is up and judged the request: opening the circuit would not help anyone.
    breaker_failure = True


class UpstreamTimeout(UpstreamError):
    code, status, title = "upstream_timeout", 504, "Upstream timed out"


class RemoteSecretRefused(ModelyardError):
    """The model names a secret the operator has not released to remote models."""

    code, status, title = "remote_secret_refused", 422, "Secret not released"


class RemoteSecretMissing(ModelyardError):
    """The server lacks the secret a remote model names (its environment or file)."""

    code, status, title = "remote_secret_missing", 500, "Remote model secret unavailable"


# -- the developer's declaration --------------------------------------------------------------

@dataclass(frozen=True)
class RemoteModel:
    """What ``Yard.register(name, RemoteModel(...), flavor="remote")`` stores as ``remote.json``.

    ``url``: the API base (``https://api.openai.com/v1``) for the OpenAI kinds, the server root
    (``http://triton:8000``) for ``oip``. ``model``: the upstream's model name. The API key is
    named, never given: ``api_key_env`` (an environment variable of the server) or
    ``api_key_file`` (an absolute path on the server), sent as ``Authorization: Bearer`` or in
    ``api_key_header``. ``headers``: extra, non-secret headers. ``timeout_s`` bounds each wait
    for the upstream (per attempt; per chunk when streaming); ``retries`` is the most extra
    attempts per call.
    """

    kind: str
    url: str
    model: str
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_header: str = "authorization"
    model_version: str | None = None  # oip only: pin the upstream model's version
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    max_connections: int = 16
    breaker_failures: int = 5
    breaker_reset_s: float = 10.0
    stream: bool = True  # openai-chat: chat() asks the upstream for server-sent events

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationFailed(f"unknown remote kind {self.kind!r}; use one of "
                                   f"{', '.join(KINDS)}", field="kind")
        _check_url_shape(self.url)
        if not isinstance(self.model, str) or not self.model.strip() or len(self.model) > 256 \
                or not self.model.isprintable():
            raise ValidationFailed("model must be the upstream's model name (1 to 256 "
                                   "printable characters)", field="model")
        if self.model_version is not None and (
                self.kind != "oip" or not isinstance(self.model_version, str)
                or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", self.model_version)):
            raise ValidationFailed("model_version is for oip upstreams: letters, digits, '.', "
                                   "'_' or '-'", field="model_version")
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValidationFailed("name the API key once: api_key_env or api_key_file",
                                   field="api_key_env")
        if self.api_key_env is not None:
            _check_env_name(self.api_key_env)
        if self.api_key_file is not None and (
                not isinstance(self.api_key_file, str) or "\0" in self.api_key_file
                or not Path(self.api_key_file).is_absolute()):
            raise ValidationFailed("api_key_file must be an absolute path on the server",
                                   field="api_key_file")
        header = self.api_key_header
        if not isinstance(header, str) or not _HEADER_NAME.match(header) or (
                header.lower() in _RESERVED_HEADERS and header.lower() != "authorization"):
            raise ValidationFailed("api_key_header must be a header name such as "
                                   "authorization or x-api-key", field="api_key_header")
        _check_headers(self.headers)
        object.__setattr__(self, "headers", {str(k): str(v) for k, v in self.headers.items()})
        _check_number(self.timeout_s, "timeout_s", 0.0, 600.0)
        _check_number(self.connect_timeout_s, "connect_timeout_s", 0.0, 60.0)
        _check_number(self.breaker_reset_s, "breaker_reset_s", 0.0, 3600.0)
        _check_int(self.retries, "retries", 0, 10)
        _check_int(self.max_connections, "max_connections", 1, 1024)
        _check_int(self.breaker_failures, "breaker_failures", 1, 1000)
        if not isinstance(self.stream, bool):
            raise ValidationFailed("stream must be true or false", field="stream")

    @property
    def secret_name(self) -> str | None:
        """Where the secret comes from, for messages (never its value)."""
        if self.api_key_env:
            return f"environment variable {self.api_key_env}"
        if self.api_key_file:
            return f"file {self.api_key_file}"
        return None

    def to_spec(self) -> dict[str, Any]:
        """The JSON document stored as ``remote.json`` (and as the version's options)."""
        spec = asdict(self)
        spec["headers"] = dict(self.headers)
        return {k: v for k, v in spec.items() if v is not None}

    @classmethod
    def from_spec(cls, data: Any) -> RemoteModel:
        known = {f.name for f in fields(cls)}
        spec = reject_unknown(data, known, "remote model field", "remote")
        for required in ("kind", "url", "model"):
            if not isinstance(spec.get(required), str):
                raise ValidationFailed(f"a remote model needs a string {required!r}",
                                       field=required)
        if not isinstance(spec.get("headers", {}), Mapping):
            raise ValidationFailed("headers must be an object of name -> value",
                                   field="headers")
        return cls(**spec)


def _check_url_shape(url: Any) -> None:
    """Checks that need no DNS, done as soon as a RemoteModel exists: a URL carrying
    credentials must never reach the artifact or the registry, where it would be stored."""
    if not isinstance(url, str):
        raise ValidationFailed("url must be a string", field="url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValidationFailed("url is not a valid URL", field="url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationFailed("url must be an absolute http:// or https:// URL", field="url")
    if parsed.userinfo:
        raise ValidationFailed("url must not carry credentials (user:password@host); name the "
                               "API key with api_key_env or api_key_file", field="url")
    if parsed.fragment:
        raise ValidationFailed("url must not have a #fragment", field="url")
    for name, _ in parse_qsl(parsed.query.decode("ascii", "replace"), keep_blank_values=True):
        if _SENSITIVE.search(name):
            raise ValidationFailed(f"url query parameter {name!r} looks like a credential; "
                                   "name the API key with api_key_env or api_key_file",
                                   field="url")


def _check_env_name(name: Any) -> None:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ValidationFailed("api_key_env must be an environment variable name",
                               field="api_key_env")
    # The server's own configuration (database URL with its password, keys, JWT settings) is
    # never a remote model's to send anywhere.
    if name.upper().startswith("MODELYARD_"):
        raise ValidationFailed("api_key_env must not name one of the server's own MODELYARD_ "
                               "variables", field="api_key_env")


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, Mapping):
        raise ValidationFailed("headers must be an object of name -> value", field="headers")
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValidationFailed(f"header name {name!r} is not valid", field="headers")
        where = f"headers.{name}"
        if name.lower() in _RESERVED_HEADERS or _SENSITIVE.search(name):
            # Message names the header only: its value may be the secret pasted by mistake.
            raise ValidationFailed(f"header {name!r} is not allowed here: headers are stored "
                                   "in clear; send an API key with api_key_env or "
                                   "api_key_file (and api_key_header)", field=where)
        if not isinstance(value, str) or len(value) > 1024 or not value.isprintable() \
                or not value.isascii():
            raise ValidationFailed(f"header {name!r} must be printable ASCII, at most 1024 "
                                   "characters", field=where)


def _check_number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low < value <= high:
        raise ValidationFailed(f"{name} must be a number above {low:g} and at most {high:g}",
                               field=name)


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationFailed(f"{name} must be an integer from {low} to {high}", field=name)


# -- configuration the operator owns ----------------------------------------------------------

def outbound_policy(env: Mapping[str, str] | None = None) -> OutboundPolicy:
    """The allow-list for upstreams: the ``outbound_allow`` setting, comma-separated.

    Flavors are not handed the server's ``Settings``, so this reads ``MODELYARD_OUTBOUND_ALLOW``
    (the variable ``Settings.load`` reads for ``outbound_allow``) each time a remote version is
    inspected or loaded. It never comes from the artifact or a request: the operator, not the
    developer, decides which private addresses are reachable. Unset means public addresses only.
    """
    raw = (os.environ if env is None else env).get(ALLOW_ENV, "")
    try:
        return OutboundPolicy.parse([e.strip() for e in raw.split(",") if e.strip()])
    except ValidationFailed as exc:
        raise ValidationFailed(f"{ALLOW_ENV}: {exc.detail}", field="outbound_allow") from None


def check_secret_allowed(model: RemoteModel, env: Mapping[str, str] | None = None) -> None:
    """Refuse a secret the operator has not released to remote models.

    The developer who registers a remote model chooses its URL; if they could also choose any
    environment variable or file of the server as its key, they could have the server send,
    say, a cloud credential to a host of their choosing. So only names the operator lists in
    ``remote_secrets`` (``MODELYARD_REMOTE_SECRETS``: variable names and absolute file paths,
    comma-separated) may be named. Checked at registration and again at every load."""
    name = model.api_key_env or model.api_key_file
    if name is None:
        return
    raw = (os.environ if env is None else env).get(SECRETS_ENV, "")
    allowed = {e.strip() for e in raw.split(",") if e.strip()}
    if str(name) not in allowed:
        field = "api_key_env" if model.api_key_env else "api_key_file"
        raise RemoteSecretRefused(
            f"{model.secret_name} is not released to remote models on this server; an "
            f"operator lists the secrets remote models may use in {SECRETS_ENV}",
            field=field)


def read_secret(model: RemoteModel) -> str | None:
    """The API key's value, read now from the server's environment or file (``None`` when the
    model names none). Errors name where the key was looked for, never what was found."""
    where = model.secret_name
    if where is None:
        return None
    check_secret_allowed(model)
    if model.api_key_env is not None:
        raw = os.environ.get(model.api_key_env)
        if not raw:
            raise RemoteSecretMissing(f"the remote model's API key comes from the {where}, "
                                      "which is not set on this server", field="api_key_env")
    else:
        path = Path(str(model.api_key_file))
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            raise RemoteSecretMissing(f"cannot read the remote model's API key from the "
                                      f"{where}: {exc.strerror}", field="api_key_file") from None
        if len(data) > MAX_SECRET_BYTES:
            raise RemoteSecretMissing(f"the {where} is larger than an API key "
                                      f"({MAX_SECRET_BYTES} bytes at most)",
                                      field="api_key_file")
        raw = data.decode("ascii", "replace")
    value = raw.strip()
    # One printable token: also keeps an odd value from reaching httpx, whose header errors
    # would quote it.
    if not _VISIBLE.match(value):
        raise RemoteSecretMissing(f"the API key in the {where} must be one line of printable "
                                  "ASCII without spaces",
                                  field="api_key_env" if model.api_key_env else "api_key_file")
    return value


class _Secret:
    """Holds the key so that no repr, traceback local or log line shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


# -- predictors -------------------------------------------------------------------------------

class _Upstream:
    """One upstream: a pooled guarded client, retries, the retry budget, the breaker."""

    def __init__(self, model: RemoteModel, *, policy: OutboundPolicy,
                 secret: str | None = None, budget: RetryBudget | None = None,
                 breaker: CircuitBreaker | None = None, rng: random.Random | None = None
                 ) -> None:
        self.model = model
        self._secret = _Secret(secret) if secret else None
        self._secret_header = model.api_key_header.lower()
        self._budget = budget or RetryBudget()
        self.breaker = breaker or CircuitBreaker("the upstream", failures=model.breaker_failures,
                                                 reset_s=model.breaker_reset_s)
        self._rng = rng
        self._base = httpx.URL(model.url)
        self._origin = _origin(self._base)
        headers = {"user-agent": "modelyard-remote", "accept": "application/json",
                   **model.headers}
        limits = httpx.Limits(max_connections=model.max_connections,
                              max_keepalive_connections=model.max_connections,
                              keepalive_expiry=30.0)
        timeout = httpx.Timeout(model.timeout_s,
                                connect=min(model.connect_timeout_s, model.timeout_s))
        # Redirects are followed, but each hop goes through the guard again, and the hook
        # drops our key from any hop that leaves the registered origin (httpx strips only
        # Authorization itself, not an api_key_header such as x-api-key).
        self._client = guarded_client(
            policy, timeout=timeout, limits=limits, headers=headers, follow_redirects=True,
            event_hooks={"request": [_secret_stays_home(self._origin, self._secret_header)]})
        # The pool's sockets close when the predictor goes away, even without close(). (The
        # client must not refer back to the predictor, or the finalizer would keep it alive.)
        self._finalizer = weakref.finalize(self, self._client.close)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model.model!r}, upstream={self._base.host!r})"

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> _Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        """The breaker's state (closed, open, half_open) and the upstream's host."""
        return {"kind": self.model.kind, "upstream": self._base.host,
                **self.breaker.snapshot()}

    # -- plumbing ---------------------------------------------------------------------------
    def _url(self, suffix: str) -> httpx.URL:
        return self._base.copy_with(path=self._base.path.rstrip("/") + suffix)

    def _scrub(self, text: str) -> str:
        if self._secret is not None:
            text = text.replace(self._secret.reveal(), "<secret>")
        return text

    def _auth_headers(self) -> dict[str, str]:
        if self._secret is None:
            return {}
        value = self._secret.reveal()
        if self._secret_header == "authorization":
            value = f"Bearer {value}"
        return {self._secret_header: value}

    @contextlib.contextmanager
    def _exchange(self, method: str, suffix: str, body: Any = None
                  ) -> Iterator[httpx.Response]:
        """One logical call: breaker, attempts, then the caller reads the 2xx answer inside
        the ``with``. The breaker learns the outcome once per call (not per attempt), after
        the answer was read: garbage in a 200 is a failure too."""
        self.breaker.before()
        healthy = False
        try:
            with self._attempts(method, suffix, body) as response:
                yield response
            healthy = True
        except GeneratorExit:  # a stream's reader stopped early: not the upstream's fault
            healthy = True
            raise
        except UpstreamError as exc:
            healthy = not exc.breaker_failure
            raise
        except httpx.TimeoutException:  # while reading the answer: too late to retry
            raise UpstreamTimeout(f"the upstream stopped answering for {self.model.timeout_s:g}"
                                  " s while sending its answer") from None
        except (httpx.TransportError, httpx.StreamError, httpx.TooManyRedirects):
            raise UpstreamError("the upstream broke off its answer (connection closed "
                                "mid-response)") from None
        finally:
            before = self.breaker.state
            if healthy:
                self.breaker.success()
            else:
                self.breaker.failure()
                if self.breaker.state == "open" and before != "open":
                    log.warning("remote model %s: circuit opened after %d failed calls; "
                                "calls refused for %g s", self.model.model,
                                self.model.breaker_failures, self.model.breaker_reset_s)

    @contextlib.contextmanager
    def _attempts(self, method: str, suffix: str, body: Any) -> Iterator[httpx.Response]:
        """Send until a 2xx answer's headers arrive, retrying what is safe to retry."""
        url = self._url(suffix)
        content = orjson.dumps(body, default=_jsonable) if body is not None else None
        headers = self._auth_headers()
        if content is not None:
            headers["content-type"] = "application/json"
        self._budget.record_attempt()
        attempt = 0
        while True:
            attempt += 1
            error: UpstreamError
            try:
                request = self._client.build_request(method, url, content=content,
                                                     headers=headers)
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                error = UpstreamTimeout(f"the upstream did not answer within "
                                        f"{self.model.timeout_s:g} s ({_kind_of(exc)})")
            except httpx.TooManyRedirects:
                raise UpstreamError("the upstream redirected too many times") from None
            except httpx.TransportError as exc:
                # Nothing was answered (refused, reset, a pooled connection closed by the
                # upstream while idle): safe to try again. The message is httpx's own (host
                # and port at most), never a header.
                error = UpstreamError(f"cannot reach the upstream: {_kind_of(exc)}")
            else:
                if response.is_success:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                error = self._status_error(response)
                if response.status_code not in RETRY_STATUSES:
                    raise error
            if attempt > self.model.retries:
                raise error
            if not self._budget.try_retry():
                log.warning("remote model %s: retry budget spent, not retrying: %s",
                            self.model.model, error.detail)
                raise error
            delay = backoff_s(attempt, rng=self._rng)
            log.info("remote model %s: attempt %d failed (%s); retrying in %.0f ms",
                     self.model.model, attempt, error.detail, delay * 1000)
            time.sleep(delay)

    def _status_error(self, response: httpx.Response) -> UpstreamError:
        """An error for a non-2xx answer, with a short, scrubbed excerpt of its message."""
        status = response.status_code
        try:
            raw = b""
            for piece in response.iter_bytes():
                raw += piece
                if len(raw) > 4096:
                    break
        except httpx.HTTPError:
            raw = b""
        finally:
            response.close()
        message = _error_message(raw, self._scrub)
        detail = f"the upstream answered {status}"
        if message:
            detail += f": {message}"
        error = (UpstreamTimeout if status == 504 else UpstreamError)(
            detail, upstream_status=status)
        error.breaker_failure = status >= 500 or status == 429
        return error

    def _read_json(self, response: httpx.Response) -> Any:
        raw = bytearray()
        for piece in response.iter_bytes():
            raw += piece
            if len(raw) > MAX_ANSWER_BYTES:
                raise UpstreamError(f"the upstream's answer is larger than "
                                    f"{MAX_ANSWER_BYTES >> 20} MiB")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError("the upstream's answer is not valid JSON") from None

    def _call_json(self, method: str, suffix: str, body: Any = None) -> Any:
        with self._exchange(method, suffix, body) as response:
            doc = self._read_json(response)
            if not isinstance(doc, dict):
                raise UpstreamError("the upstream's answer is not a JSON object")
            return doc


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def _secret_stays_home(origin: tuple[str, str, int | None], header: str
                       ) -> Callable[[httpx.Request], None]:
    """A request hook (run for every redirect hop) that removes the key from requests
    leaving ``origin``."""

    def hook(request: httpx.Request) -> None:
        if _origin(request.url) != origin:
            request.headers.pop(header, None)

    return hook


def _kind_of(exc: Exception) -> str:
    """A short description of a transport error (its class, and httpx's message, which names
    at most the host; headers never appear in it)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:SNIPPET_CHARS]}" if text else type(exc).__name__


def _error_message(raw: bytes, scrub: Callable[[str], str]) -> str:
    """The message in an error answer: OpenAI ``{"error": {"message"}}``, OIP ``{"error"}``,
    problem+json ``{"detail"}``, else the text. One line, bounded, with our key removed
    (an upstream may quote what it received) before anything cuts or escapes it."""
    text = scrub(raw.decode("utf-8", "replace"))
    with contextlib.suppress(ValueError):
        doc = json.loads(text)
        if isinstance(doc, dict):
            found = doc.get("error", doc.get("detail", doc.get("message")))
            if isinstance(found, dict):
                found = found.get("message", found)
            text = scrub(found if isinstance(found, str) else json.dumps(found))
    text = " ".join(text.split())
    return text.encode("unicode_escape").decode("ascii")[:SNIPPET_CHARS]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _texts(inputs: Arrays, name: str) -> list[str]:
    """The strings of a text input, ``[n]`` (or ``[n, 1]``)."""
    if name in inputs:
        array = np.asarray(inputs[name])
    elif len(inputs) == 1:  # a signature that named the one input differently
        array = np.asarray(next(iter(inputs.values())))
        name = next(iter(inputs))
    else:
        raise InvalidInput(f"missing input {name!r}", field=f"inputs.{name}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidInput(f"input {name!r} must be a list of strings (shape [n])",
                           field=f"inputs.{name}")
    texts = []
    for value in array.tolist():
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input {name!r} is not UTF-8 text",
                                   field=f"inputs.{name}") from None
        if not isinstance(value, str):
            raise InvalidInput(f"input {name!r} must contain strings", field=f"inputs.{name}")
        texts.append(value)
    return texts


def _count(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _finish(reason: Any) -> str:
    return "length" if reason == "length" else "stop"


class RemoteChatPredictor(_Upstream):
    """An OpenAI-compatible chat completions upstream (a ``ChatModel``)."""

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        prompts = _texts(inputs, "prompt")
        # An empty prompt has nothing to complete: answered here, which also keeps a
        # deployment's warm-up (zero-filled, so empty strings) from paying for upstream calls.
        work = [i for i, p in enumerate(prompts) if p]
        answers = [""] * len(prompts)
        if len(work) == 1:
            answers[work[0]] = self._complete(prompts[work[0]])
        elif work:
            # One conversation per upstream call; the rows of a batch go in parallel, bounded
            # by the pool (threads end with the ``with``).
            workers = min(len(work), self.model.max_connections, 8)
            with ThreadPoolExecutor(workers, thread_name_prefix="modelyard-remote") as pool:
                for i, text in zip(work, pool.map(lambda j: self._complete(prompts[j]), work),
                                   strict=True):
                    answers[i] = text
        return {"completion": np.array(answers, dtype=object)}

    def _complete(self, prompt: str) -> str:
        doc = self._call_json("POST", "/chat/completions",
                              self._body([{"role": "user", "content": prompt}], {}, False))
        text, _, _ = _parse_completion(doc)
        return text

    def _body(self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any],
              stream: bool) -> dict[str, Any]:
        if not isinstance(messages, Sequence) or not messages:
            raise InvalidInput("messages must be a non-empty list", field="messages")
        sent = []
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
                raise InvalidInput("each message needs a 'role'", field=f"messages[{i}]")
            sent.append({k: message[k] for k in ("role", "content", "name") if k in message})
        body: dict[str, Any] = {"model": self.model.model, "messages": sent}
        body.update({k: options[k] for k in CHAT_OPTIONS if options.get(k) is not None})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
             ) -> Iterator[ChatChunk]:
        """Stream the answer: pieces as the upstream's events arrive, then a last chunk with
        the finish reason and token usage. Retries happen only before the first piece."""
        body = self._body(messages, options, self.model.stream)
        return self._chat(body)

    def _chat(self, body: dict[str, Any]) -> Iterator[ChatChunk]:
        with self._exchange("POST", "/chat/completions", body) as response:
            media = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "text/event-stream":  # not asked to stream, or cannot stream
                doc = self._read_json(response)
                text, reason, usage = _parse_completion(doc)
                if text:
                    yield ChatChunk(text)
                yield ChatChunk("", reason, *usage)
                return
            finish: str | None = None
            counted, done = (0, 0), False
            for data in _sse_data(response):
                if data == "[DONE]":
                    done = True
                    break
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError("the upstream sent an event that is not JSON") from None
                if not isinstance(event, dict):
                    raise UpstreamError("the upstream sent an event that is not an object")
                if event.get("error") is not None:
                    message = _error_message(orjson.dumps(event), self._scrub)
                    raise UpstreamError(f"the upstream failed mid-answer: {message}")
                choices = event.get("choices") or []
                if not isinstance(choices, list):
                    raise UpstreamError("the upstream sent an event with bad 'choices'")
                if choices:
                    first = choices[0]
                    delta = first.get("delta") if isinstance(first, dict) else None
                    if not isinstance(delta, dict):
                        raise UpstreamError("the upstream sent an event without 'delta'")
                    content = delta.get("content")
                    if isinstance(content, str) and content:
                        yield ChatChunk(content)
                    if first.get("finish_reason"):
                        finish = str(first["finish_reason"])
                if isinstance(event.get("usage"), dict):
                    counted = (_count(event["usage"], "prompt_tokens"),
                               _count(event["usage"], "completion_tokens"))
            if not done and finish is None:
                raise UpstreamError("the upstream's stream ended before the answer did")
            yield ChatChunk("", _finish(finish), *counted)


def _parse_completion(doc: Any) -> tuple[str, str, tuple[int, int]]:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
        raise UpstreamError("the upstream's answer has no choices[0].message")
    content = first["message"].get("content")
    if content is not None and not isinstance(content, str):
        raise UpstreamError("the upstream's message content is not text")
    usage = doc.get("usage")
    return (content or "", _finish(first.get("finish_reason")),
            (_count(usage, "prompt_tokens"), _count(usage, "completion_tokens")))


def _sse_data(response: httpx.Response) -> Iterator[str]:
    """The ``data:`` fields of a server-sent event stream, one per line (as OpenAI sends
    them), with the total size bounded."""
    buffer = bytearray()
    total = 0
    for piece in response.iter_bytes():
        total += len(piece)
        if total > MAX_ANSWER_BYTES:
            raise UpstreamError(f"the upstream's stream is larger than "
                                f"{MAX_ANSWER_BYTES >> 20} MiB")
        buffer += piece
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[:end + 1]
            if line.startswith(b"data:"):
                yield line[5:].strip().decode("utf-8", "replace")
    if buffer.startswith(b"data:"):
        yield bytes(buffer[5:]).strip().decode("utf-8", "replace")


class RemoteEmbeddingsPredictor(_Upstream):
    """An OpenAI-compatible embeddings upstream (an ``Embedder``)."""

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        return {"embedding": self.embed(_texts(inputs, "text")).vectors}

    def embed(self, texts: Sequence[str]) -> Embeddings:
        texts = list(texts)
        if not texts:
            return Embeddings(np.zeros((0, 0), dtype=np.float32), 0)
        body = {"model": self.model.model, "input": texts, "encoding_format": "float"}
        with self._exchange("POST", "/embeddings", body) as response:
            doc = self._read_json(response)
            data = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(data, list) or len(data) != len(texts) \
                    or not all(isinstance(d, dict) for d in data):
                raise UpstreamError(f"the upstream's answer needs 'data' with {len(texts)} "
                                    "embeddings")
            if all(isinstance(d.get("index"), int) for d in data):
                data = sorted(data, key=lambda d: d["index"])
                if [d["index"] for d in data] != list(range(len(texts))):
                    raise UpstreamError("the upstream's embeddings have wrong indexes")
            try:
                vectors = np.array([d.get("embedding") for d in data], dtype=np.float32)
            except (TypeError, ValueError):
                raise UpstreamError("the upstream's embeddings are not lists of numbers of "
                                    "one length") from None
            if vectors.ndim != 2 or vectors.shape[1] == 0 or not np.isfinite(vectors).all():
                raise UpstreamError("the upstream's embeddings are not finite vectors of one "
                                    "length")
            return Embeddings(vectors, _count(doc.get("usage"), "prompt_tokens"))


class RemoteOipPredictor(_Upstream):
    """An Open Inference Protocol v2 upstream: JSON tensors in, JSON tensors out."""

    @property
    def _model_path(self) -> str:
        path = f"/v2/models/{quote(self.model.model, safe='')}"
        if self.model.model_version:
            path += f"/versions/{quote(self.model.model_version, safe='')}"
        return path

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        rows = {a.shape[0] for a in arrays.values() if a.ndim}
        with self._exchange("POST", self._model_path + "/infer",
                            {"inputs": to_jsonable(arrays)}) as response:
            doc = self._read_json(response)
            outputs = doc.get("outputs") if isinstance(doc, dict) else None
            try:
                decoded = decode_many(outputs, "outputs")
            except InvalidInput as exc:
                raise UpstreamError(f"the upstream's outputs are not OIP tensors: "
                                    f"{exc.detail}") from None
            if not decoded:
                raise UpstreamError("the upstream answered no outputs")
            # Every output must keep the batch on its first axis, or the batcher would hand
            # callers each other's rows.
            for name, array in decoded.items():
                if rows and (array.ndim == 0 or array.shape[0] not in rows):
                    raise UpstreamError(f"the upstream's output {name!r} has shape "
                                        f"{list(array.shape)}, not {rows.pop()} rows")
            return decoded

    def metadata(self) -> dict[str, Any]:
        return dict(self._call_json("GET", self._model_path))

    def signature(self) -> Signature:
        """The upstream model's signature, from its OIP model metadata."""
        doc = self.metadata()

        def specs(key: str) -> tuple[TensorSpec, ...]:
            items = doc.get(key)
            if not isinstance(items, list):
                raise UpstreamError(f"the upstream's model metadata has no {key!r} list")
            found = []
            for item in items:
                if not isinstance(item, dict):
                    raise UpstreamError(f"the upstream's metadata {key} are not objects")
                name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
                if not isinstance(name, str) or datatype not in OIP_TO_DTYPE \
                        or not isinstance(shape, list):
                    raise UpstreamError(f"the upstream's metadata describes {key[:-1]} "
                                        f"{name!r} in a way Modelyard cannot serve "
                                        f"(datatype {datatype!r})")
                try:
                    found.append(TensorSpec(name, OIP_TO_DTYPE[datatype], tuple(shape)))
                except ValidationFailed as exc:
                    raise UpstreamError(f"the upstream's metadata: {exc.detail}") from None
            return tuple(found)

        try:
            return Signature(specs("inputs"), specs("outputs"))
        except ValidationFailed as exc:
            raise UpstreamError(f"the upstream's metadata: {exc.detail}") from None


CHAT_SIGNATURE = Signature(inputs=(TensorSpec("prompt", "string", (-1,)),),
                           outputs=(TensorSpec("completion", "string", (-1,)),))
EMBEDDINGS_SIGNATURE = Signature(inputs=(TensorSpec("text", "string", (-1,)),),
                                 outputs=(TensorSpec("embedding", "float32", (-1, -1)),))


RemotePredictor = RemoteChatPredictor | RemoteEmbeddingsPredictor | RemoteOipPredictor


def connect(model: RemoteModel, *, policy: OutboundPolicy | None = None,
            secret: str | None = None, budget: RetryBudget | None = None,
            breaker: CircuitBreaker | None = None) -> RemotePredictor:
    """The predictor for ``model``: its kind's class (so only a chat upstream is a
    ``ChatModel`` and only an embeddings upstream an ``Embedder``), with the secret read now
    from the server unless given, and the allow-list read now unless given."""
    if secret is None:
        secret = read_secret(model)
    classes: dict[str, type[RemotePredictor]] = {
        "openai-chat": RemoteChatPredictor, "openai-embeddings": RemoteEmbeddingsPredictor,
        "oip": RemoteOipPredictor}
    return classes[model.kind](model, policy=policy or outbound_policy(), secret=secret,
                               budget=budget, breaker=breaker)


# -- the flavor -------------------------------------------------------------------------------

def read_spec(folder: Path) -> RemoteModel:
    path = folder / SPEC_FILE
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise InvalidArtifact(f"a remote artifact needs {SPEC_FILE}") from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise InvalidArtifact(f"{SPEC_FILE} is larger than {MAX_SPEC_BYTES >> 10} KiB")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidArtifact(f"{SPEC_FILE} is not valid JSON: {exc}") from None
    return RemoteModel.from_spec(data)


def check_destination(model: RemoteModel, policy: OutboundPolicy) -> None:
    """The registration-time check: the outbound guard on the URL, and no key over plain
    http to the public internet (anyone on the path would read it)."""
    destination = check_url(model.url, policy)
    if model.secret_name and httpx.URL(model.url).scheme == "http" and \
            all(classify(ip) is None for ip in destination.addresses):
        raise ValidationFailed("an API key is sent to a public host over https only; use an "
                               "https:// URL", field="url")


class RemoteFlavor:
    name = "remote"

    def matches_object(self, model: Any) -> bool:
        return isinstance(model, RemoteModel)

    def matches_files(self, folder: Path) -> bool:
        return (folder / SPEC_FILE).is_file()

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        if not isinstance(model, RemoteModel):
            raise ValidationFailed(f"the remote flavor saves a RemoteModel, not a "
                                   f"{type(model).__name__}", field="flavor")
        spec = model.to_spec()
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        return spec

    def inspect(self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
                ) -> dict[str, Any]:
        # Nothing from the folder runs, so no trust is needed; what must hold is the URL.
        model = read_spec(folder)
        check_destination(model, outbound_policy())
        check_secret_allowed(model)
        return model.to_spec()

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        # The spec is read from the artifact, whose sha256 (and signature, when the project
        # requires one) was checked before this call, rather than from the options row.
        return connect(read_spec(folder))

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        model = read_spec(folder)
        if model.kind == "openai-chat":
            return CHAT_SIGNATURE
        if model.kind == "openai-embeddings":
            return EMBEDDINGS_SIGNATURE
        predictor = connect(model)
        try:
            assert isinstance(predictor, RemoteOipPredictor)
            return predictor.signature()  # fetched with the key, through the guard
        finally:
            predictor.close()

