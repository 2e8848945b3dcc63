#!/usr/bin/env bash
# The GPU check: one call on a machine with an H100/H200 and no internet. Builds ember for sm_90a
# with all cores, runs `ember selftest --device cuda` (selftest.json: every kernel against its
# reference on this card), runs the whole test suite (CUDA included), runs every benchmark in its short
# mode, and writes report.md plus logs into the folder given (on the device tool: $OUT).
#
#   bash bench/device_check.sh OUT_DIR
#
# Needs torch with CUDA, nvcc, cmake, ninja, scikit-build-core, pybind11, pytest and hypothesis
# on the machine, and the nvidia-cutlass wheel in .whl/ (bench/README.md says how to bring it).
# Budget: EMBER_CHECK_BUDGET_S (default 560 s) in all, enforced step by step. Never touches the card's clocks, power or modes.
set -uo pipefail
out=${1:?usage: bench/device_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) EMBER_CUDA=1 EMBER_CUDA_ARCHS=${EMBER_CUDA_ARCHS:-90a}
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
# One overall budget (the device tool stops a command at 600 s): each step gets its own cap or
# what is left before the deadline, whichever is less, and 20 s stay for the report.
deadline=$(( t0 + ${EMBER_CHECK_BUDGET_S:-560} ))
cap() { local left=$(( deadline - 20 - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 1 ? left : 1 )) || echo "$1"; }

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.sm,clocks.max.mem,power.limit,temperature.gpu --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nvcc --version | tail -1
} > "$out/env.txt" 2>&1

# Pure-Python wheels the image lacks (tomli-w, for the trainer's saved config).
extra=$(ls .whl/*.whl 2>/dev/null | grep -v nvidia_cutlass)
if [ -n "$extra" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ember_site $extra && export PYTHONPATH=/tmp/ember_site${PYTHONPATH:+:$PYTHONPATH}
fi

# CUTLASS headers from the carried wheel (a wheel is a zip; nothing to install).
wheel=$(ls .whl/nvidia_cutlass-*.whl 2>/dev/null | head -1)
if [ -n "$wheel" ]; then
  rm -rf /tmp/ember_cutlass && python3 -m zipfile -e "$wheel" /tmp/ember_cutlass
  export EMBER_CUTLASS_DIR=/tmp/ember_cutlass/cutlass_library/source/include
fi

stamp "build (sm_$EMBER_CUDA_ARCHS, $CMAKE_BUILD_PARALLEL_LEVEL jobs)"
if ! EMBER_PTXAS_VERBOSE=1 python3 -m pip install --no-build-isolation --no-deps --no-index -v -e . > "$out/build.log" 2>&1; then
  stamp "BUILD FAILED"; tail -40 "$out/build.log"
  printf '# ember device check: build failed\n\nSee build.log.\n' > "$out/report.md"
  exit 1
fi
build_s=$(( $(date +%s) - t0 ))

stamp "ember selftest (every kernel against its reference on this GPU)"
timeout $(cap 120) python3 -m ember selftest --device cuda --json "$out/selftest.json" > "$out/selftest.log" 2>&1
selftest_rc=$?
tail -1 "$out/selftest.log"

stamp "tests"
timeout $(cap 240) python3 -m pytest -q -p no:cacheprovider tests > "$out/tests.log" 2>&1
tests_rc=$?
tail -3 "$out/tests.log"

stamp "ember train (the README's default run; target on a GPU: under a minute)"
train_t0=$(date +%s)
( cd /tmp && timeout $(cap 180) python3 -m ember train --job.dir=/tmp/ember_runs --job.name=default --metrics.progress=false ) > "$out/train.log" 2>&1
train_rc=$?
train_s=$(( $(date +%s) - train_t0 ))
cp /tmp/ember_runs/default/metrics.jsonl /tmp/ember_runs/default/loss.png "$out/" 2>/dev/null
tail -2 "$out/train.log"

stamp "benchmarks (short mode)"
: > "$out/bench.txt"
for b in bench/bench_*.py; do
  name=$(basename "$b" .py)
  timeout $(cap 180) python3 "$b" --quick --compile --json "$out/$name.json" >> "$out/bench.txt" 2>&1 || echo "$name failed (rc $?)" >> "$out/bench.txt"
  echo >> "$out/bench.txt"
done

stamp "CUTLASS GEMMs under compute-sanitizer memcheck (ragged shapes: fp8_gemm, sparse, cross_entropy)"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
for check in fp8_gemm_memcheck sparse_memcheck cross_entropy_memcheck; do
  if [ -n "$sanitizer" ]; then
    timeout $(cap 90) "$sanitizer" --tool memcheck --error-exitcode 1 python3 bench/memcheck/$check.py > "$out/$check.log" 2>&1
    echo "$check under memcheck rc $? ($check.log)" | tee -a "$out/bench.txt"
  else
    timeout $(cap 60) python3 bench/memcheck/$check.py > "$out/$check.log" 2>&1
    echo "$check without compute-sanitizer rc $? ($check.log)" | tee -a "$out/bench.txt"
  fi
  tail -1 "$out/$check.log" >> "$out/bench.txt"
done
# The fuzz suite's CUDA cases (every op, odd layouts and special values) under memcheck: few
# examples, since memcheck slows kernels 10-100x.
if [ -n "$sanitizer" ]; then
  timeout $(cap 150) "$sanitizer" --tool memcheck --error-exitcode 1 python3 -m pytest -q -p no:cacheprovider \
    -k "cuda and not cpu-" --hypothesis-profile=memcheck tests/fuzz > "$out/fuzz_memcheck.log" 2>&1
  echo "fuzz suite (CUDA cases) under memcheck rc $? (fuzz_memcheck.log)" | tee -a "$out/bench.txt"
  tail -1 "$out/fuzz_memcheck.log" >> "$out/bench.txt"
fi

stamp "train_apollo (AdamW vs Apollo vs ApolloMini on a small Llama, 300 steps)"
timeout $(cap 150) python3 examples/train_apollo.py --steps 300 --json "$out/train_apollo.json" >> "$out/bench.txt" 2>&1 || echo "train_apollo failed (rc $?)" >> "$out/bench.txt"

{
  echo "# ember device check"
  echo
  echo '```'; cat "$out/env.txt"; echo '```'
  echo
  echo "- build: ${build_s}s, ptxas report in build.log"
  echo "- ember selftest --device cuda (rc $selftest_rc): $(tail -1 "$out/selftest.log"), selftest.json"
  echo "- tests (rc $tests_rc): $(tail -1 "$out/tests.log")"
  echo "- ember train default (rc $train_rc): ${train_s}s wall, $(grep -o 'done at step.*val loss [0-9.]*' "$out/train.log")"
  echo "- total: $(( $(date +%s) - t0 ))s"
  echo
  echo "## Benchmarks (--quick)"
  echo
  echo '```'; cat "$out/bench.txt"; echo '```'
} > "$out/report.md"
cat "$out/bench.txt"
stamp "done: $out/report.md"
exit $(( tests_rc != 0 ? tests_rc : selftest_rc ))
