#!/usr/bin/env bash
# make bench: Modelyard side by side with its peers on this machine, then Modelyard's own
# overload, binary-protocol and cold-start checks. Results: bench/results/<run id>/.
#
# Uses the shared harness (../shared/bench/anchors: venvs for Ray Serve and BentoML, wrk,
# the in-process limit) with Modelyard in its candidate slot, once per variant:
#   modelyard-onnx-batch    the model converted to ONNX (--to-onnx), dynamic batching
#   modelyard-onnx-nobatch  the same, batching off (max_batch_size 1)
#   modelyard-sklearn-batch the scikit-learn model as is (trusted joblib), dynamic batching
# Knobs: the harness's (DUR, CONNS, ONLY, SKIP, REPEATS...), QUICK=1 (Modelyard and FastAPI
# only, shorter runs), SKIP_PEERS=1 (Modelyard variants only).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANCHORS=${ANCHORS:-$(cd "$ROOT/../shared/bench/anchors" 2>/dev/null && pwd)}
[[ -d $ANCHORS ]] || { echo "the shared harness is not at $ROOT/../shared/bench/anchors" >&2; exit 1; }
PY=$ROOT/.venv/bin/python
RUN_ID=${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
export VENVS=${VENVS:-/tmp/anchors-venvs} MODELS=${MODELS:-/tmp/anchors-models}
export OUT=${OUT:-/tmp/anchors-results/$RUN_ID}
YARDS=${YARDS:-/tmp/modelyard-bench-yards}
RESULTS=$ROOT/bench/results/$RUN_ID
mkdir -p "$OUT" "$RESULTS"

[[ -f $MODELS/tiny.joblib && -f $MODELS/medium.joblib ]] || "$PY" "$ANCHORS/make_models.py" "$MODELS"
"$PY" "$ROOT/bench/prepare.py" "$MODELS" "$YARDS" || exit 1

candidate() {  # the shell command the harness runs to start Modelyard for $MODEL on $PORT
  echo "exec $ROOT/.venv/bin/modelyard --yard $YARDS/\$(basename \$MODEL .joblib)-$1 serve --port \$PORT --log-level warning"
}
run_harness() {  # variant [extra env...]
  env CANDIDATE_NAME="modelyard-$1" CANDIDATE_CMD="$(candidate "$1")" \
      CANDIDATE_PATH=/endpoints/bench/predict "${@:2}" bash "$ANCHORS/run.sh"
}
if [[ ${QUICK:-0} == 1 ]]; then
  export DUR=${DUR:-8} DUR1=${DUR1:-5}
  run_harness onnx-batch ONLY=noop-asgi,fastapi,modelyard-onnx-batch NO_SETUP=${NO_SETUP:-0}
elif [[ ${SKIP_PEERS:-0} == 1 ]]; then
  run_harness onnx-batch ONLY=modelyard-onnx-batch NO_SETUP=${NO_SETUP:-0}
else
  run_harness onnx-batch
fi
for variant in onnx-nobatch sklearn-batch; do
  run_harness "$variant" ONLY="modelyard-$variant" NO_SETUP=1
done
cp "$OUT"/{results.jsonl,limit.jsonl,machine.json,versions.json,report.md} "$RESULTS/" 2>/dev/null
"$PY" "$ROOT/bench/ratios.py" "$OUT" "$RESULTS/ratios.json" | tee "$RESULTS/ratios.md"

# Modelyard's own checks (127.0.0.1 only, bounded, they stop by themselves).
"$PY" "$ROOT/bench/overload.py" "$RESULTS/overload.json"
"$PY" "$ROOT/bench/binary.py" "$RESULTS/binary.json"
"$PY" "$ROOT/bench/shadow.py" "$RESULTS/shadow.json"  # what a 100% shadow costs the primary
"$PY" "$ROOT/bench/text.py" "$RESULTS"  # text embedder: torch vs onnx runtime, in-process
echo "results: $RESULTS"
