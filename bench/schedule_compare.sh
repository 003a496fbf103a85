#!/usr/bin/env bash
# Batch-size schedules against the frontier of constant batches (`batchlaw schedule compare`), on
# three workloads: the NQM (exact answers known), bytemlp and bytegpt tiny (CPU, minutes each). Every
# comparison races the batch controller (`controller`, its branch tests counted in its cost) beside the ramps.
# Results and their reading: bench/RESULTS.md, sections "Batch-size schedules against the frontier" and
# "The batch controller in `schedule compare`".
# JSON (every run's curve and batch changes) and PNG (steps vs examples) land in bench/.
set -euo pipefail
BATCHLAW=${BATCHLAW:-"python -m batchlaw"}
PYTHON=${PYTHON:-python}
OUT=${OUT:-bench}

# 1. The issue-21 NQM: dim 100, c_exponent 0.5, target 0.05, batches 8 to 1024, LR 0.066 at 8, linear rule
#    (capped at 0.75 x 2/h_max = 1.5). fixed_ramp is the two-stage ramp: 128, then 512 after 7,808 examples.
$BATCHLAW schedule compare --workload nqm --workload-arg dim=100 --workload-arg c_exponent=0.5 --target-loss 0.05 \
    --seeds 0,1,2 --small-batch 8 --large-batch 1024 --lr 0.066 --lr-rule linear --eval-every 8 --max-examples 100000 \
    --schedules constant_small,constant_large,noise_ramp,cbs_ramp,seesaw,fixed_ramp,controller \
    --ramp-stages 0:128,7808:512 \
    --out "$OUT/schedule_compare_nqm.json" --png "$OUT/schedule_compare_nqm.png" --no-progress
# The same setting without sampling: the exact expected frontier and ramps.
$PYTHON bench/nqm_exact_frontier.py

# 2. bytemlp (next-byte MLP, Adam): batch 8 to 512 for the ramps and the frontier, to held-out loss 2.1 (a ramp
#    capped below the frontier's largest batch could never match it on this flat frontier).
$BATCHLAW schedule compare --workload bytemlp --target-loss 2.1 --seeds 0,1,2 --small-batch 8 --large-batch 512 \
    --lr 2e-3 --eval-every 1024 --max-examples 400000 \
    --out "$OUT/schedule_compare_bytemlp.json" --png "$OUT/schedule_compare_bytemlp.png" --no-progress

# 3. bytegpt tiny (2 layers, d = 64, 32-byte context, AdamW): from batch 4, where the branched CBS grows from
#    8-16 to 32-64 examples before the target (8x the starting batch and more), to 32, to held-out loss 2.3.
$BATCHLAW schedule compare --workload bytegpt --workload-arg size=tiny --target-loss 2.3 --seeds 0,1,2 \
    --small-batch 4 --large-batch 32 --lr 2e-3 --eval-every 256 --max-examples 60000 \
    --out "$OUT/schedule_compare_bytegpt_tiny.json" --png "$OUT/schedule_compare_bytegpt_tiny.png" --no-progress
# The branched CBS that justifies the size (trunk at batch 4, k up to 16, two branch seeds):
STORE=$(mktemp -d)
$BATCHLAW branch --workload bytegpt --workload-arg size=tiny --base-batch 4 --lr 2e-3 \
    --checkpoints 0,1024,2048,4096,8192,12288 --multipliers 1,2,4,8,16 --budget 1024 --seeds 0,1 \
    --store "$STORE/branches.db" --json > "$OUT/branch_bytegpt_tiny_b4.json"
rm -rf "$STORE"
