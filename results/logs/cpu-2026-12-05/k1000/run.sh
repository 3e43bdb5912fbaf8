#!/bin/bash
# usage: run.sh NAME [fit.py options...]  -- one 1,000-device run, one thread, logged beside its folder
cd ${CODE:-~/lf-runs/k1000-code} && source ~/venv/bin/activate
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
name=$1; shift
out=~/lf-runs/k1000/$name
resume=(); [ -f "$out/checkpoints/last.ckpt" ] && resume=(--resume)
echo "$(date -u +%FT%TZ) start $name $*" >> ~/lf-runs/k1000/queue.log
/usr/bin/time -v python scripts/fit.py --devices 1000 --devices-per-round 50 --local-epochs 1 --batch-size 32 \
  --aggregation weighted --wandb-mode disabled --output-dir "$out" "${resume[@]}" "$@" >> ~/lf-runs/k1000/$name.log 2>&1
echo "$(date -u +%FT%TZ) end $name rc=$?" >> ~/lf-runs/k1000/queue.log
