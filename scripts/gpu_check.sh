#!/usr/bin/env bash
# The CUDA checks of a GPU machine, in one timed run (issue #21, section 4):
#   1. the machine: nvidia-smi, torch, cuDNN;
#   2. the test suite with CUDA visible (so `runtime.device: auto` trains on the GPU, and the CUDA-only tests run);
#   3. the cross-validations of `make compare` (default preset, LSTM and GRU, 5 folds, seeds 1-3) and of
#      `make compare-all` (basic, deep, advanced; the params' seed) by pipeline.ablate, which runs the same
#      fold trainings as the DVC experiments of `make compare` (same splits, params and seeds) in one process
#      pool, without DVC's queue; all presets at once, sharing the GPU; GPU use logged every 5 s.
# Seen on an H200 (2026-11-30, docs/benchmarks.md "On a GPU"): one training process is no faster there than
# on one CPU core for the default LSTM; 13 at once kept the GPU 93% busy and none finished 80 epochs in 400 s.
# Everything lands in OUTDIR, packed as OUTDIR/gpu_check.tar.gz at the end, also when a phase times out.
#
#   scripts/gpu_check.sh OUTDIR [TEST_SECONDS] [CV_SECONDS]
#
# Needs python3 with the project's requirements (or their wheels in .whl/, installed to /tmp/site first).
set -u
out=${1:?usage: scripts/gpu_check.sh OUTDIR [TEST_SECONDS] [CV_SECONDS]}
test_s=${2:-100}
cv_s=${3:-330}
mkdir -p "$out/logs" "$out/cv"
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: the carried wheels did not install" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DVC_NO_ANALYTICS=1
pack() { tar -czf "$out/gpu_check.tar.gz" -C "$out" logs cv 2>/dev/null; }
trap pack EXIT
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

{ nvidia-smi; nproc; $py -c "import torch, soundfile, soxr
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(),
      torch.cuda.get_device_name(0), 'libsndfile', soundfile.__libsndfile_version__)"; } >"$out/logs/env.txt" 2>&1
tail -3 "$out/logs/env.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 >"$out/logs/gpu_use.csv" 2>&1 &

stamp "tests (timeout ${test_s} s)"
timeout "$test_s" $py -m pytest tests -q -p no:cacheprovider -n 14 -rfEs >"$out/logs/pytest.txt" 2>&1
echo "pytest exit $?"; grep -E "passed|failed|error" "$out/logs/pytest.txt" | tail -3

stamp "feature cache"
$py -c "from pathlib import Path; from pipeline.crossval import build_feature_cache
print(build_feature_cache(Path('params.yaml'), Path('/tmp/acento-cache')))" >"$out/logs/cache.txt" 2>&1 || {
    tail -5 "$out/logs/cache.txt"; exit 1; }

stamp "cross-validations (timeout ${cv_s} s)"
cv() {  # VARIANT WORKERS [ablate options]
    local variant=$1 workers=$2 name=${1#preset:}; shift 2
    timeout -k 5 "$cv_s" $py -m pipeline.ablate --variants "$variant" --cells lstm gru --workers "$workers" \
        --cache-dir /tmp/acento-cache --out "$out/cv/$name" --predictions "$out/cv/$name/predictions.json" "$@" \
        >"$out/logs/cv-$name.txt" 2>&1
    local rc=$?
    echo "$(( $(date +%s) - t0 )) s: $variant exit $rc" >>"$out/logs/cv-done.txt"
}
pids=()
cv default 5 --seeds 1 2 3 & pids+=($!)
for preset in basic deep advanced; do cv "preset:$preset" 4 & pids+=($!); done
wait "${pids[@]}"
cat "$out/logs/cv-done.txt"
stamp "done"
for f in "$out"/cv/*/ablation.md; do echo "== $f"; grep -E "^\| (default|preset)" "$f"; done
