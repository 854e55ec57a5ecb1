"""Modelyard against the in-process limit and against the best peer, from one harness run.

Usage: python bench/ratios.py RUN_DIR [OUT.json]
Reads RUN_DIR/results.jsonl and limit.jsonl (written by ../shared/bench/anchors) and prints a
markdown table per model with good answers/s, p50/p99, server CPU per request, RSS and time to
first answer, each Modelyard variant's ratio to the best peer and to the in-process limit, and
the issue's targets marked met or missed. Nothing here is asserted in tests.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

CEILING = "noop-asgi"


def load(run: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    rows = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines() if x.strip()]
    limit = {}
    for line in (run / "limit.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            limit[(r["model"], r["batch"])] = r
    return rows, limit


def figure(rows: list[dict[str, Any]], system: str, model: str, conns: int, key: str
           ) -> float | None:
    values = [r[f"c{conns}"].get(key) for r in rows
              if r["system"] == system and r["model"] == model and f"c{conns}" in r]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def top(rows: list[dict[str, Any]], system: str, model: str, key: str) -> float | None:
    values = [r.get(key) for r in rows if r["system"] == system and r["model"] == model]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.{digits}f}"


def report(run: Path) -> tuple[str, dict[str, Any]]:
    rows, limit = load(run)
    systems = sorted({r["system"] for r in rows})
    ours = [s for s in systems if s.startswith("modelyard")]
    peers = [s for s in systems if s not in ours and s != CEILING]
    lines = [f"# Modelyard vs peers ({run.name})", ""]
    summary: dict[str, Any] = {"run": run.name, "models": {}}
    for model in ("tiny", "medium"):
        if not any(r["model"] == model for r in rows):
            continue
        best_peer = max(peers, key=lambda s: figure(rows, s, model, 32, "ok_rps") or 0,
                        default=None)
        best = figure(rows, best_peer, model, 32, "ok_rps") if best_peer else None
        lim1 = limit.get((model, 1), {}).get("rows_per_s")
        lim32 = limit.get((model, 32), {}).get("rows_per_s")
        lines += [f"## {model}", "",
                  f"in-process limit: {fmt(lim1)} rows/s at batch 1, {fmt(lim32)} at batch 32; "
                  f"best peer at 32 connections: {best_peer} ({fmt(best)} good answers/s)", "",
                  "| system | ok/s c32 | p50 ms | p99 ms | ok/s c1 | p99 ms c1 | CPU ms/req "
                  "| RSS MB | first answer s | vs best peer | vs limit b32 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        model_summary: dict[str, Any] = {"best_peer": best_peer, "best_peer_ok_rps": best,
                                         "limit_b1": lim1, "limit_b32": lim32, "systems": {}}
        for system in [*ours, *peers, CEILING]:
            ok32 = figure(rows, system, model, 32, "ok_rps")
            if ok32 is None and system == CEILING:
                continue
            entry = {
                "ok_rps_c32": ok32,
                "p50_ms_c32": figure(rows, system, model, 32, "p50_ms"),
                "p99_ms_c32": figure(rows, system, model, 32, "p99_ms"),
                "ok_rps_c1": figure(rows, system, model, 1, "ok_rps"),
                "p99_ms_c1": figure(rows, system, model, 1, "p99_ms"),
                "cpu_ms_per_req": figure(rows, system, model, 32, "server_cpu_ms_per_ok_req"),
                "rss_mb": figure(rows, system, model, 32, "rss_peak_mb"),
                "startup_s": top(rows, system, model, "startup_s"),
            }
            entry["vs_best_peer"] = ok32 / best if ok32 and best else None
            entry["vs_limit_b32"] = ok32 / lim32 if ok32 and lim32 else None
            model_summary["systems"][system] = entry
            name = f"**{system}**" if system in ours else system
            lines.append(
                f"| {name} | {fmt(ok32)} | {fmt(entry['p50_ms_c32'], 2)} | "
                f"{fmt(entry['p99_ms_c32'], 2)} | {fmt(entry['ok_rps_c1'])} | "
                f"{fmt(entry['p99_ms_c1'], 2)} | {fmt(entry['cpu_ms_per_req'], 3)} | "
                f"{fmt(entry['rss_mb'])} | {fmt(entry['startup_s'], 2)} | "
                f"{fmt(entry['vs_best_peer'], 2)}x | {fmt(entry['vs_limit_b32'], 2)}x |")
        lines.append("")
        summary["models"][model] = model_summary
    lines += targets(summary)
    return "\n".join(lines) + "\n", summary


def targets(summary: dict[str, Any]) -> list[str]:
    """The issue's targets, each marked met or missed with the figure behind it."""
    out = ["## Targets (issue 3)", ""]

    def check(label: str, ok: bool | None, evidence: str) -> None:
        mark = "met" if ok else ("missed" if ok is not None else "not measured")
        out.append(f"- {label}: **{mark}** ({evidence})")

    for model, rule in (("tiny", "tiny: >= 1.5x the best peer at c32, p99 < 10 ms"),
                        ("medium", "medium with batching: >= 75% of the batch-32 limit, "
                                   "p99 < 30 ms")):
        data = summary["models"].get(model)
        if not data:
            check(rule, None, "model not run")
            continue
        for system, entry in data["systems"].items():
            if not system.startswith("modelyard") or "nobatch" in system:
                continue
            if model == "tiny":
                ok = (entry["vs_best_peer"] or 0) >= 1.5 and (entry["p99_ms_c32"] or 1e9) < 10
                ev = f"{fmt(entry['vs_best_peer'], 2)}x, p99 {fmt(entry['p99_ms_c32'], 2)} ms"
            else:
                ok = (entry["vs_limit_b32"] or 0) >= 0.75 and (entry["p99_ms_c32"] or 1e9) < 30
                ev = (f"{fmt((entry['vs_limit_b32'] or 0) * 100)}% of the limit, "
                      f"p99 {fmt(entry['p99_ms_c32'], 2)} ms")
            check(f"{rule} [{system}]", ok, ev)
    for system, entry in summary["models"].get("tiny", {}).get("systems", {}).items():
        if system.startswith("modelyard-onnx"):
            check(f"time to first answer < 1.5 s [{system}]",
                  entry["startup_s"] is not None and entry["startup_s"] < 1.5,
                  f"{fmt(entry['startup_s'], 2)} s")
    return [*out, ""]


def main() -> None:
    run = Path(sys.argv[1])
    text, summary = report(run)
    print(text)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
