#!/usr/bin/env bash
# Every GPU figure of issue #33 in one timed run on a lent GPU machine (about 8 minutes):
#   1. the machine: nvidia-smi, torch, cuDNN;
#   2. the CUDA-only tests (tests that need a GPU, with CUDA visible);
#   3. a Common Voice-size release (scripts/make_scale_corpus.py, clips hard-linked from the sample),
#      `download`, `prepare` and `features` on it with every core: seconds and peak memory;
#   4. the training loop against its floors on the GPU (scripts/bench.py --only recurrent --device cuda):
#      clips/s of the default LSTM and GRU at 16/32/64 clips and at frame budgets, beside the network's and
#      the bare RNN's forward + backward over the same batches;
#   5. several fold runs sharing the GPU (scripts/ablate.py, the default network by frames, 5 folds of each
#      cell at once, 10 processes), for CV_SECONDS: epochs/s per process and GPU use (nvidia-smi every 2 s);
#   6. with PRESET_SECONDS > 0 (off by default: a second lent run), the original study's `deep` and
#      `advanced` networks cross-validated on all five folds of the bundled sample (20 fold runs sharing the
#      GPU, their predictions in OUTDIR/cv/presets.json for scripts/presets_table.py: issue #33, item 5).
# Everything lands in OUTDIR, packed as OUTDIR/gpu_check.tar.gz at the end, also when a phase times out.
#
#   scripts/gpu_check.sh OUTDIR [CLIPS] [CV_SECONDS] [PRESET_SECONDS]
#
# Needs python3 with the project's requirements (or their wheels in .whl/, installed to /tmp/site first).
set -u
out=${1:?usage: scripts/gpu_check.sh OUTDIR [CLIPS] [CV_SECONDS]}
clips=${2:-100000}
cv_s=${3:-150}
presets_s=${4:-0}
mkdir -p "$out/logs" "$out/bench" "$out/cv"
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: the carried wheels did not install" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD:$PWD/scripts:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DVC_NO_ANALYTICS=1
pack() { tar -czf "$out/gpu_check.tar.gz" -C "$out" logs bench cv 2>/dev/null; }
trap pack EXIT
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
timed() {  # NAME COMMAND...: wall seconds and peak memory of the whole process tree, into logs/NAME.time
    local name=$1; shift
    /usr/bin/time -f "%e s %M KiB" -o "$out/logs/$name.time" "$@" >"$out/logs/$name.txt" 2>&1
    echo "$name exit $? $(cat "$out/logs/$name.time" 2>/dev/null)"
}

{ nvidia-smi; nproc; free -g; $py -c "import torch, soundfile, soxr
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(),
      torch.cuda.get_device_name(0), 'libsndfile', soundfile.__libsndfile_version__)"; } >"$out/logs/env.txt" 2>&1
tail -3 "$out/logs/env.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 >"$out/logs/gpu_use.csv" 2>&1 &

stamp "CUDA tests"
timeout 60 $py -m pytest -q -p no:cacheprovider tests/training/test_trainer.py -k cuda -rfEs >"$out/logs/pytest.txt" 2>&1
echo "pytest exit $?"; tail -2 "$out/logs/pytest.txt"

stamp "a Common Voice-size release of $clips validated clips"
scale=/tmp/acento-scale
timed scale-corpus $py scripts/make_scale_corpus.py --clips "$clips" --out "$scale/release" --force
sed -e "s#^  source: .*#  source: $scale/release/cv-corpus-scale-$clips/es#" \
    -e "s#^  workers: .*#  workers: 0#" params.yaml >"$scale/params.yaml"
timed download $py -m pipeline.download --params "$scale/params.yaml" --out "$scale/release.json"
timed prepare $py -m pipeline.prepare --params "$scale/params.yaml" --release "$scale/release.json" \
    --out "$scale/manifest.tsv" --metrics "$out/logs/prepare-metrics.json"
timed features $py -m pipeline.features --params "$scale/params.yaml" --manifest "$scale/manifest.tsv" \
    --out "$scale/features.h5" --metrics "$out/logs/features-metrics.json"
ls -l "$scale/features.h5" >>"$out/logs/features.txt"

stamp "the training loop against its floors on the GPU"
timeout 200 $py scripts/bench.py --only recurrent --device cuda --cache "$scale/features.h5" --params "$scale/params.yaml" \
    --recurrent-clips 20000 --preset-clips 2000 --recurrent-repeats 1 --batch-frames 16000 64000 256000 \
    --out "$out/bench" >"$out/logs/bench.txt" 2>&1
echo "bench exit $?"; grep -E "loop" "$out/logs/bench.txt"

stamp "10 fold runs sharing the GPU for ${cv_s} s"
# A fold run's epochs show only in its dvclive folder under ablate's scratch folder (its stdout is kept out
# of ablate's, and the folder is removed when ablate ends): every 10 s, each run's last completed epoch.
( while sleep 10; do for f in "${TMPDIR:-/tmp}"/acento-ablate-*/*/live*/metrics.json; do
    [ -f "$f" ] || continue; r=${f#*/acento-ablate-*/}; echo "$(( $(date +%s) - t0 )) ${r%/metrics.json} $(grep -o '"step": [0-9]*' "$f")"
  done; done ) >"$out/logs/cv-epochs.txt" 2>/dev/null &
watcher=$!
timeout -k 5 "$cv_s" $py scripts/ablate.py --params "$scale/params.yaml" --variants default --cells lstm gru --workers 10 \
    --set runtime.device=cuda train.batch_frames=64000 train.warmup_epochs=2 train.epochs=20 \
    --cache-dir "$scale/cv-cache" --out "$out/cv" >"$out/logs/cv.txt" 2>&1
echo "cv exit $?"; kill $watcher 2>/dev/null
# per run: its last completed epoch (dvclive's step counts from 0) and when it was seen
awk '{ last[$2] = $0 } END { for (r in last) print last[r] }' "$out/logs/cv-epochs.txt" | sort -k2
if [ "$presets_s" -gt 0 ]; then
    stamp "deep and advanced, 5 folds x 2 cells, for at most ${presets_s} s"
    timeout -k 5 "$presets_s" $py scripts/ablate.py --variants preset:deep preset:advanced --cells lstm gru \
        --workers 20 --set runtime.device=cuda --cache-dir /tmp/acento-presets-cache --out "$out/cv/presets" \
        --predictions "$out/cv/presets.json" >"$out/logs/presets.txt" 2>&1
    echo "presets exit $?"; tail -3 "$out/logs/presets.txt"
fi
stamp "done"
