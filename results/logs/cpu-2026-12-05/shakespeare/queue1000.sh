#!/bin/bash
# 1,000 rounds (about 14 epochs: each role trained about 14 times), after the 150-round pair
# (2026-12-05: the queue script was stopped during r1000_variant, which ran to its end; its runs are all committed)
R="--max-rounds 1000 --max-epochs 14"
while pgrep -f "shakespeare/alg1_sparse_kl0.1 " > /dev/null; do sleep 10; done
bash ~/lf-runs/shakespeare/run.sh r1000_dense $R --dense
bash ~/lf-runs/shakespeare/run.sh r1000_variant_kl0.1 $R --kl-warmup-epochs 1 --kl-final-weight 0.1
bash ~/lf-runs/shakespeare/run.sh r1000_alg1_sparse_kl0.1 $R --kl-warmup-epochs 1 --kl-final-weight 0.1 --share-log-sigma2 --download-sparse
bash ~/lf-runs/shakespeare/run.sh r1000_variant $R --kl-warmup-epochs 1
