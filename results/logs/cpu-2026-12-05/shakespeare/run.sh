#!/bin/bash
# usage: run.sh NAME [fit.py options...]  -- one Shakespeare run (715 roles, 10 a round, 150 rounds), one thread
cd ${CODE:-~/lf-runs/k1000-code} && source ~/venv/bin/activate
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
name=$1; shift
out=~/lf-runs/shakespeare/$name
resume=(); [ -f "$out/checkpoints/last.ckpt" ] && resume=(--resume)
echo "$(date -u +%FT%TZ) start $name $*" >> ~/lf-runs/shakespeare/queue.log
/usr/bin/time -v python scripts/fit.py --dataset shakespeare --network char_lstm_small --devices 715 --devices-per-round 10 \
  --local-epochs 1 --batch-size 10 --aggregation weighted --lr 3e-3 --max-rounds 150 --max-epochs 10 \
  --wandb-mode disabled --output-dir "$out" "${resume[@]}" "$@" >> ~/lf-runs/shakespeare/$name.log 2>&1
echo "$(date -u +%FT%TZ) end $name rc=$?" >> ~/lf-runs/shakespeare/queue.log
