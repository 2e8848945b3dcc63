#!/usr/bin/env bash
# PRIOR end to end on (part of) the built-in corpus, the Python standard library, in three steps:
#   1. train a reference model (text only, the plain loss);
#   2. score the corpus with it: per-token log p_ref → weights w = (1 − p_ref)^α, renormalized to
#      mean 1 per document, stored beside the token shards (weights-*.bin, weights.json);
#   3. train with those weights (the fused weighted linear + cross-entropy), and, to compare,
#      the same run without them.
# A comparison to read, not a test (tests/train/test_train.py runs the same steps small).
#
#   bash examples/prior_pipeline.sh [OUT_DIR] [STEPS] [CORPUS...]
#
# CORPUS defaults to four standard-library packages (~4 MB of Python): scoring runs the reference
# model over every training token, ~50k tokens/s on a 2-core CPU, so the whole library (`stdlib`,
# 31 MB) takes ~10 minutes there and seconds on a GPU.
set -euo pipefail
out=${1:-runs/prior}
steps=${2:-300}
shift $(( $# > 2 ? 2 : $# ))
lib=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")
corpus=("${@:-$lib/email $lib/json $lib/asyncio $lib/unittest}")
mkdir -p "$out"

# 0. the corpus as a token folder (byte tokens, hash split into train / val)
ember prepare ${corpus[@]} --out "$out/tokens" --val-per-mille 50

# 1. the reference model
ember train --job.dir="$out" --job.name=reference --data.sources="$out/tokens" --training.steps="$steps" \
  --metrics.progress=false

# 2. PRIOR weights from the reference model's scoring pass (no logits materialized)
ember score "$out/reference" --data "$out/tokens" --alpha 1.0

# 3. training on the weights, and the same run without them
ember train --job.dir="$out" --job.name=prior --data.sources="$out/tokens" --loss.token_weights="$out/tokens" \
  --training.steps="$steps" --metrics.progress=false
ember train --job.dir="$out" --job.name=plain --data.sources="$out/tokens" --training.steps="$steps" \
  --metrics.progress=false

for run in prior plain; do
  echo "$run: $(ember eval "$out/$run" | tail -1)"
done
