#!/usr/bin/env bash
# Batch-size schedules raced to a held-out loss on bytegpt tiny (CPU, a few minutes per run).
# Results and their reading: bench/RESULTS.md, section "Batch-size schedules".
set -euo pipefail
BATCHLAW=${BATCHLAW:-"python -m batchlaw"}
# Run 1: defaults (noise ramp c = 1, CBS tolerance 1%), all five schedules, seeds 0-2.
$BATCHLAW schedule compare --workload bytegpt --workload-arg size=tiny --target-loss 2.3 --seeds 0,1,2 \
    --small-batch 8 --large-batch 64 --lr 3e-3 --eval-every 256 --max-examples 60000 \
    --out bench/schedule_compare_bytegpt.json
# Run 2: settings revised after run 1 (c = 0.5, tolerance 0.5%), fresh seeds 3-5.
$BATCHLAW schedule compare --workload bytegpt --workload-arg size=tiny --target-loss 2.3 --seeds 3,4,5 \
    --small-batch 8 --large-batch 64 --lr 3e-3 --eval-every 256 --max-examples 60000 \
    --noise-c 0.5 --cbs-tolerance 0.005 --schedules constant_small,noise_ramp,cbs_ramp \
    --out bench/schedule_compare_bytegpt_run2.json
