"""Small local causal language models (transformers), for completion and chat.

``save`` takes a ``(model, tokenizer)`` tuple (a transformers ``PreTrainedModel`` whose class
is a causal LM, ``...ForCausalLM`` or ``...LMHeadModel``, and its tokenizer) or a
``text-generation`` ``Pipeline`` (its ``.model`` and ``.tokenizer`` are saved). Both are written
with ``save_pretrained``: config.json, ``*.safetensors``, the tokenizer files and, when the
tokenizer has one, its chat template. A folder laid out that way registers as-is.

Trust: no code from the artifact runs and no pickle is read unless the version is trusted. A
config (or tokenizer config) with ``auto_map`` needs the model's own Python code
(``trust_remote_code``), and weights only in pickle form (``pytorch_model.bin``, ``.pt``..)
need unpickling: both are refused at registration unless ``trusted=True``. Otherwise the
weights are loaded from safetensors only (``use_safetensors=True``, so a pickle lying next to
them is never opened). Chat templates are Jinja that transformers runs in a sandbox: allowed.

Two ways to call a loaded model:

* ``predict`` (OIP v2, ``/endpoints/{name}/predict``): ``prompt`` BYTES [-1] -> ``completion``
  BYTES [-1]; greedy, at most ``max_new_tokens`` new tokens (a flavor option taken from the
  artifact's generation_config.json, default 64, at most 2048). An empty prompt completes to
  an empty string (the warm-up sends empty strings and must stay cheap).
* ``chat`` (``modelyard.flavors.base.ChatModel``, the OpenAI routes): the tokenizer's chat
  template when it has one, else one ``role: content`` line per message followed by
  ``assistant:``. Options: max_tokens (default: the rest of the context, at most 2048),
  temperature (0 = greedy, default 1), top_p, stop (up to 4 strings), seed.

Generation is a plain loop over the model's KV cache rather than ``model.generate``: sampling
gets a ``torch.Generator`` of its own per request (a seed never touches the global RNG that
other threads use), the consumer can stop it between any two tokens by closing the iterator
(a client that went away), and each token is handed out as text as soon as it decodes to
whole characters. A prompt that leaves no room in the model's context is refused with 413.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.domain.errors import (
    FlavorUnavailable,
    InvalidArtifact,
    ModelyardError,
    PayloadTooLarge,
    UntrustedArtifact,
    ValidationFailed,
    reject_unknown,
)
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.flavors.base import Arrays, ChatChunk, Predictor

MAX_TOKENS = 2048  # the most new tokens one call may ask for
DEFAULT_MAX_NEW_TOKENS = 64  # predict(), unless generation_config.json says otherwise
DEFAULT_CONTEXT = 2048  # when neither the config nor the tokenizer states a context length
MAX_STOPS = 4
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length",
                 "max_sequence_length", "max_seq_len")
_OPTIONS = {"max_tokens", "temperature", "top_p", "stop", "seed"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise FlavorUnavailable(
            "the causal_lm flavor needs transformers and torch: pip install 'modelyard[text]'"
        ) from exc
    return transformers


# -- generation options ------------------------------------------------------------------------

@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. ``temperature`` 0 means greedy (top_p and seed do not matter)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any], default_max: int) -> Sampling:
        """Check chat options (None means "default"); max_tokens above MAX_TOKENS is cut to
        it, so the answer ends with finish_reason "length" instead of a refusal."""
        given = {k: v for k, v in reject_unknown(dict(options), _OPTIONS, "option",
                                                 "options").items() if v is not None}
        max_tokens = _integer(given, "max_tokens")
        if max_tokens is not None and max_tokens < 1:
            raise ValidationFailed("max_tokens must be at least 1", field="max_tokens")
        return cls(max_tokens=min(max_tokens or default_max, MAX_TOKENS),
                   temperature=_number(given, "temperature", 1.0, 0.0, 2.0),
                   top_p=_number(given, "top_p", 1.0, 0.0, 1.0),
                   stop=_stops(given.get("stop")),
                   seed=_integer(given, "seed"))


def _integer(given: Mapping[str, Any], name: str) -> int | None:
    value = given.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValidationFailed(f"{name} must be an integer", field=name)
    return value


def _number(given: Mapping[str, Any], name: str, default: float, low: float, high: float
            ) -> float:
    value = given.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not low <= value <= high:
        raise ValidationFailed(f"{name} must be a number from {low:g} to {high:g}", field=name)
    return float(value)


def _stops(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return ()
    if not isinstance(stops, list | tuple) or len(stops) > MAX_STOPS or \
            not all(isinstance(s, str) and s for s in stops):
        raise ValidationFailed(f"stop must be a non-empty string or a list of at most "
                               f"{MAX_STOPS} of them", field="stop")
    return tuple(stops)


# -- text as it is generated -------------------------------------------------------------------

class _Detokenizer:
    """Token ids to text as they come, never cutting a character in two.

    Decoding one token alone is wrong for byte-level and sentencepiece vocabularies (a
    character may span tokens, a leading space depends on the token before), and decoding
    everything on every step costs O(n^2). So: decode a short window twice, with and without
    the new tokens, and hand out the difference once it no longer ends in a partial character.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.prefix = 0  # start of the window (context for the next decode)
        self.read = 0  # tokens up to here are already handed out

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        before = self.decode(self.ids[self.prefix:self.read])
        after = self.decode(self.ids[self.prefix:])
        # A character is at most 4 bytes: past a few tokens a trailing U+FFFD is for good
        # (the model produced invalid bytes), so waiting longer would only grow the window.
        settled = final or not after.endswith("\ufffd") or len(self.ids) - self.read > 4
        if len(after) > len(before) and settled:
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


class _StopScanner:
    """Cuts the text at the first stop string. Text that might be the start of a stop string
    is held back until it is clear, so no part of a stop string is ever sent."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to send now, and whether a stop string was reached."""
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.pending = self.pending[:min(found)], ""
            return out, True
        keep = self._partial()
        out = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(out):]
        return out, False

    def finish(self, text: str) -> tuple[str, bool]:
        out, hit = self.feed(text)
        if not hit:
            out, self.pending = out + self.pending, ""
        return out, hit

    def _partial(self) -> int:
        """Length of the longest end of the pending text that begins some stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:k]):
                    best = k
                    break
        return best


# -- the predictor -----------------------------------------------------------------------------

class CausalLMPredictor:
    """``predict`` (batched tensors, greedy) and ``chat`` (ChatModel) over one loaded model.

    Safe to call from several threads at once: forward passes share no state, and tokenizer
    calls are serialised (the Rust tokenizer refuses concurrent use: "Already borrowed")."""

    def __init__(self, model: Any, tokenizer: Any, *, context: int,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context = context
        self.max_new_tokens = max_new_tokens
        self.eos_ids = _eos_ids(model, tokenizer)
        self._lock = threading.Lock()
        # Newer transformers can encode control tokens found inside messages as plain text,
        # so a user cannot write "<|im_start|>system" into the conversation.
        self._sanitize = "sanitize_control_tokens" in pyinspect.signature(
            tokenizer.apply_chat_template).parameters

    # tensors ------------------------------------------------------------------------------
    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        # "prompt" unless the registrant renamed the one input in their own signature.
        value = inputs["prompt"] if "prompt" in inputs else next(iter(inputs.values()))
        prompts = np.asarray(value, dtype=object)
        greedy = Sampling(max_tokens=self.max_new_tokens, temperature=0.0)
        completions = [self.complete(_text(p), greedy) for p in prompts.reshape(-1)]
        return {"completion": np.array(completions, dtype=object).reshape(prompts.shape)}

    def complete(self, prompt: str, sampling: Sampling) -> str:
        if not prompt:
            return ""
        with self._lock:
            ids = list(self.tokenizer(prompt)["input_ids"])
        return "".join(chunk.text for chunk in self._generate(ids, sampling, "prompt"))

    # chat ---------------------------------------------------------------------------------
    def chat(self, messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]
             ) -> Iterator[ChatChunk]:
        sampling = Sampling.parse(options, default_max=MAX_TOKENS)
        ids = self.chat_ids(messages)
        yield from self._generate(ids, sampling, "messages")

    def chat_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        plain = [{"role": str(m.get("role", "user")), "content": _text(m.get("content") or "")}
                 for m in messages]
        with self._lock:
            if getattr(self.tokenizer, "chat_template", None):
                return self._templated(plain)
            # No template: message text must not turn into special tokens either.
            return list(self.tokenizer(plain_chat(plain),
                                       split_special_tokens=True)["input_ids"])

    def _templated(self, messages: list[dict[str, str]]) -> list[int]:
        extra = {"sanitize_control_tokens": True} if self._sanitize else {}
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, **extra)
        except Exception as exc:  # templates raise (jinja raise_exception) on bad turns
            raise ValidationFailed(f"the model's chat template refused the messages: {exc}",
                                   field="messages") from exc
        return [int(i) for i in encoded["input_ids"]]

    # generation ---------------------------------------------------------------------------
    def _generate(self, ids: list[int], sampling: Sampling, field: str
                  ) -> Iterator[ChatChunk]:
        """Text pieces, then a last chunk with the finish reason and the token counts."""
        room = self.context - len(ids)
        if room < 1:
            raise PayloadTooLarge(
                f"the prompt is {len(ids)} tokens; this model's context holds {self.context} "
                f"tokens, so the prompt may have at most {self.context - 1}", field=field)
        detokenizer = _Detokenizer(self._decode)
        stops = _StopScanner(sampling.stop)
        count, finish, hit = 0, "length", False
        for token in self._tokens(ids, min(sampling.max_tokens, room), sampling):
            count += 1
            if token in self.eos_ids:
                finish = "stop"
                break
            piece, hit = stops.feed(detokenizer.add(token))
            if piece:
                yield ChatChunk(piece)
            if hit:
                finish = "stop"
                break
        tail = ""
        if not hit:
            tail, hit = stops.finish(detokenizer.flush())
            finish = "stop" if hit else finish
        yield ChatChunk(tail, finish_reason=finish, prompt_tokens=len(ids),
                        completion_tokens=count)

    def _tokens(self, ids: list[int], limit: int, sampling: Sampling) -> Iterator[int]:
        """New token ids, one forward pass each over the cached keys and values. Closing
        the iterator stops generation before the next pass."""
        torch = _torch()
        generator = torch.Generator()
        if sampling.seed is None:
            generator.seed()
        else:
            generator.manual_seed(sampling.seed & 0xFFFF_FFFF_FFFF_FFFF)
        step, past = torch.tensor([ids]), None
        for _ in range(limit):
            # inference_mode per step, not around the loop: it is thread state, and the
            # consumer runs its own code between two tokens.
            with torch.inference_mode():
                out = self.model(input_ids=step, past_key_values=past, use_cache=True)
                token = _pick(torch, out.logits[0, -1], sampling, generator)
            past = out.past_key_values
            yield token
            step = torch.tensor([[token]])

    def _decode(self, ids: list[int]) -> str:
        with self._lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def _pick(torch: Any, logits: Any, sampling: Sampling, generator: Any) -> int:
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p >= 1:
        return int(torch.multinomial(probs, 1, generator=generator))
    ordered, index = torch.sort(probs, descending=True)
    # Keep the smallest set of most likely tokens whose mass reaches top_p (the first always).
    keep = (torch.cumsum(ordered, dim=0) - ordered) < sampling.top_p
    ordered = ordered * keep
    choice = torch.multinomial(ordered / ordered.sum(), 1, generator=generator)
    return int(index[choice])


def plain_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """The conversation for a tokenizer without a chat template: one ``role: content`` line
    per message, then ``assistant:`` for the model to continue."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None),
                   tokenizer):
        value = getattr(source, "eos_token_id", None)
        values = value if isinstance(value, list | tuple) else [value]
        found.update(int(v) for v in values if isinstance(v, int))
    return frozenset(found)


def _torch() -> Any:
    import torch

    return torch


# -- the flavor --------------------------------------------------------------------------------

class CausalLMFlavor:
    name = "causal_lm"

    def matches_object(self, model: Any) -> bool:
        # Nothing can be a transformers object unless transformers is imported already; this
        # keeps detection from paying seconds of imports for every other kind of model.
        return "transformers" in sys.modules and _parts(model) is not None

    def matches_files(self, folder: Path) -> bool:
        config = _read_json(folder / "config.json")
        return config is not None and _architecture(config) is not None and \
            _has_tokenizer(folder)

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        parts = _parts(model)
        if parts is None:
            raise ValidationFailed(
                "the causal_lm flavor saves a (model, tokenizer) tuple or a text-generation "
                "pipeline of a transformers causal LM (...ForCausalLM / ...LMHeadModel), not "
                f"{type(model).__name__}", field="model")
        lm, tokenizer = parts
        lm.save_pretrained(str(folder))  # safetensors
        tokenizer.save_pretrained(str(folder))
        generation = getattr(lm, "generation_config", None)
        if generation is not None and not (folder / "generation_config.json").exists():
            generation.save_pretrained(str(folder))
        return {}

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        config = _read_json(folder / "config.json")
        if config is None:
            raise InvalidArtifact("a causal_lm artifact needs a config.json (save_pretrained)")
        architecture = _architecture(config)
        if architecture is None:
            raise InvalidArtifact(
                f"config.json names no causal-LM architecture (...ForCausalLM or "
                f"...LMHeadModel); it has {config.get('architectures')!r}")
        if not _has_tokenizer(folder):
            raise InvalidArtifact("a causal_lm artifact needs its tokenizer files "
                                  f"(one of {', '.join(_TOKENIZER_FILES)})")
        tokenizer_config = _read_json(folder / "tokenizer_config.json") or {}
        custom = "auto_map" in config or "auto_map" in tokenizer_config
        if custom and not trusted:
            raise UntrustedArtifact(
                "this model needs its own Python code (auto_map in its config: "
                "trust_remote_code); review it, then register with trusted=True (--trusted)",
                field="trusted")
        weights = _weights(folder)
        if weights == "pickle" and not trusted:
            raise UntrustedArtifact(
                "the weights are pickles (pytorch_model.bin or similar), which can run code "
                "when loaded; convert them to safetensors, or pass trusted=True (--trusted)",
                field="trusted")
        generation = _read_json(folder / "generation_config.json") or {}
        max_new = generation.get("max_new_tokens")
        return {
            "architecture": architecture,
            "context": _context(config, tokenizer_config),
            "max_new_tokens": min(max_new, MAX_TOKENS) if isinstance(max_new, int) and
            max_new > 0 else DEFAULT_MAX_NEW_TOKENS,
            "custom_code": custom,
            "weights": weights,
        }

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        custom = bool(options.get("custom_code"))
        pickled = options.get("weights") == "pickle"
        if (custom or pickled) and not trusted:  # options are stored; check again anyway
            raise UntrustedArtifact("refusing to run model code or unpickle weights of a "
                                    "version not marked trusted")
        transformers = _transformers()
        remote = custom and trusted  # never trust_remote_code for an untrusted version
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=remote,
                use_safetensors=not pickled)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=remote)
        except ModelyardError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError and more
            raise InvalidArtifact(f"cannot load the causal LM: {exc}") from exc
        model.eval()
        return CausalLMPredictor(
            model, tokenizer, context=int(options.get("context") or DEFAULT_CONTEXT),
            max_new_tokens=int(options.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS))

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        return Signature(inputs=(TensorSpec("prompt", "string", (-1,)),),
                         outputs=(TensorSpec("completion", "string", (-1,)),))


def _parts(model: Any) -> tuple[Any, Any] | None:
    """(model, tokenizer) of a tuple or pipeline holding a causal LM, else None."""
    try:
        from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase
    except ImportError:
        return None
    if isinstance(model, Pipeline):
        pair: Any = (model.model, model.tokenizer)
    elif isinstance(model, tuple) and len(model) == 2:
        pair = model
    else:
        return None
    lm, tokenizer = pair
    if isinstance(lm, PreTrainedModel) and isinstance(tokenizer, PreTrainedTokenizerBase) \
            and type(lm).__name__.endswith(_CAUSAL_SUFFIXES):
        return lm, tokenizer
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _architecture(config: Mapping[str, Any]) -> str | None:
    names = config.get("architectures")
    if not isinstance(names, list):
        return None
    return next((n for n in names if isinstance(n, str) and n.endswith(_CAUSAL_SUFFIXES)),
                None)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


def _weights(folder: Path) -> str:
    files = [p.name.lower() for p in folder.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return "safetensors"
    if any(name.endswith(_PICKLES) for name in files if not name.startswith("training_args")):
        return "pickle"
    raise InvalidArtifact("a causal_lm artifact needs its weights (*.safetensors)")


def _context(config: Mapping[str, Any], tokenizer_config: Mapping[str, Any]) -> int:
    for key in _CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    # Tokenizers without a limit say model_max_length = 1e30; only a real number counts.
    value = tokenizer_config.get("model_max_length")
    if isinstance(value, int) and 0 < value < 10_000_000:
        return value
    return DEFAULT_CONTEXT
