#!/usr/bin/env bash
# What a session lent the GPU machine runs for issue #22, prepared so that its 15 device-minutes go to
# measuring, not to debugging. From the project root, with the device tool (carry [".gpu"], timeout_s 590):
#   ../shared/gpu/stage --sweep                                      # here, once (the whole product, ~57 MiB)
#   source .gpu/env.sh || exit; bash bench/gpu_session.sh first       # call 1: GPU tests, benchmark, sweep
#   source .gpu/env.sh || exit; bash bench/gpu_session.sh resume      # call 2, right after: the same sweep on
# Call 1 runs the GPU-only tests (tests/test_step_graph.py -m gpu), bench/pack_throughput.py (P = 1, 24,
# 80, 240, graphs against eager, the paper preset's packing in fp32 and TF32), then starts the study's
# k = 30 column through `vaesweep run` (8 alphas x seeds 0-2, 1000 epochs, one pack of 24 on the GPU,
# resources auto) and stops it with SIGINT before the call's time is up (Tune saves its state; the sweep
# lives in runs/, git-ignored, which stays on the machine while it is held). Call 2 resumes it; whenever
# the sweep has finished, the report is written. Everything comes back in $OUT (at most 8 files):
# gpu_tests.txt, pack_throughput.txt, sweep-<phase>.txt (console, status table), report.tar.xz
# (report HTML, figures, summary CSV) and mlflow.db.xz. Commit them under bench/results/h200/ and docs/.
set -uo pipefail
phase=${1:?usage: bench/gpu_session.sh first|resume}
out=${OUT:?run through the device tool: \$OUT is its output folder}
budget=${BUDGET_SECONDS:-560}  # of the call's 590: what the sweep may use ends 90 s before, for its report
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
name=k30-column
# SWEEP_OVERRIDES: more --set flags, for a rehearsal on a CPU (train.epochs=2 ...)
read -r -a overrides <<< "${SWEEP_OVERRIDES:-}"
sweep=(paper --name "$name" --set 'grid.k=[30]' --set 'grid.seed=[0,1,2]' "${overrides[@]}" --storage runs)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/sweep-$phase.txt" 2>&1

if [ "$phase" = first ]; then
  vaesweep run paper --dry-run 2>&1 | sed -n 1p > "$out/gpu_tests.txt"  # the device line: torch, CUDA, the GPU
  VAESWEEP_TEST_MNIST=$VAESWEEP_DATA_DIR timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_step_graph.py >> "$out/gpu_tests.txt" 2>&1
  echo "gpu tests exit $?" | tee -a "$out/gpu_tests.txt"
  timeout 170 python3 bench/pack_throughput.py --skip-targets --steps 50 --sizes "${BENCH_SIZES:-1,24,80,240}" \
    > "$out/pack_throughput.txt" 2>&1
  echo "benchmark exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/pack_throughput.txt"
fi

run_for=$(( $(left) - 90 ))
if [ "$run_for" -gt 60 ]; then
  echo "vaesweep run ${sweep[*]} for at most $run_for s" >> "$out/sweep-$phase.txt"
  timeout --signal=INT --kill-after=60 "$run_for" vaesweep run "${sweep[@]}" >> "$out/sweep-$phase.txt" 2>&1
  echo "vaesweep run exit $? after $(( $(date +%s) - start )) s" >> "$out/sweep-$phase.txt"
fi
vaesweep status "$name" --storage runs >> "$out/sweep-$phase.txt" 2>&1
if vaesweep status "$name" --storage runs --json | python3 -c \
    'import json, sys; t = json.load(sys.stdin)["trials"]; sys.exit(any(x["state"] != "TERMINATED" or x["stopped_early"] for x in t))'; then
  timeout 80 vaesweep report "$name" --storage runs >> "$out/sweep-$phase.txt" 2>&1
  tar -C "runs/$name" -cJf "$out/report.tar.xz" report
fi
xz -T0 -6 -c "runs/$name/mlflow.db" > "$out/mlflow.db.xz"
ls -l "$out" >> "$out/sweep-$phase.txt"
