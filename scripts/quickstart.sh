#!/usr/bin/env bash
# The README's main job: set up .venv, then train an ALFWorld agent with SDAR from a warm start,
# on CPU with the packaged SmolLM2-135M (configs/quickstart.yaml):
#   1. the environment's planner expert plays 40 generated training games; its turns are the
#      demonstrations;
#   2. `sdar sft` fine-tunes the model on them (the warm start: it now writes valid actions);
#   3. `sdar train` runs SDAR from that warm start, validating on a fixed panel of 12 games it
#      never trained on before and after, and prints the success table and the report path.
# Extra arguments are config overrides of step 3, e.g. `bash scripts/quickstart.sh iterations=6`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run_dir"
echo "[quickstart] 1/3 expert demonstrations on 40 training games -> $run_dir/demos.jsonl"
.venv/bin/sdar env play --env alfworld --policy expert --episodes 40 --prompt-mode action_only \
    --option preset=easy --option offline_games=40 --write-demos "$run_dir/demos.jsonl" \
    > "$run_dir/demos_summary.json"
echo "[quickstart] 2/3 supervised warm start on the demonstrations -> $run_dir/warm"
.venv/bin/sdar sft --config configs/quickstart.yaml --demos "$run_dir/demos.jsonl" --output-dir "$run_dir/warm"
echo "[quickstart] 3/3 SDAR from the warm start -> $run_dir/sdar"
exec .venv/bin/sdar train --config configs/quickstart.yaml init_checkpoint="$run_dir/warm" \
    --output-dir "$run_dir/sdar" "$@"
