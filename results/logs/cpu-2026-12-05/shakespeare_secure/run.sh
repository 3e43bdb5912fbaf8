#!/bin/bash
# the paper's variant on Shakespeare (150 rounds, mean aggregation) plain, and with SecAgg+ over the dense vector and over the union
cd ~/lf-runs/k1000-code2 && source ~/venv/bin/activate
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
common="--dataset shakespeare --network char_lstm_small --devices 715 --devices-per-round 10 --local-epochs 1 --batch-size 10 --lr 3e-3 --max-rounds 150 --max-epochs 10 --kl-warmup-epochs 1 --kl-final-weight 0.1 --wandb-mode disabled"
for pair in "plain:" "secure_dense:--secure-aggregation" "secure_union:--secure-aggregation --secagg-support union"; do
  name=${pair%%:*}; extra=${pair#*:}
  echo "$(date -u +%FT%TZ) start $name" >> ~/lf-runs/shakespeare_secure/queue.log
  python scripts/fit.py $common $extra --output-dir ~/lf-runs/shakespeare_secure/$name > ~/lf-runs/shakespeare_secure/$name.log 2>&1
  echo "$(date -u +%FT%TZ) end $name rc=$?" >> ~/lf-runs/shakespeare_secure/queue.log
done
