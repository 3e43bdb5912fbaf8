#!/bin/bash
# this session's queue: waits for the kl0.03 run, then one Algorithm 1 run with per-sequence weight noise
while pgrep -f "output-dir /root/lf-runs/shakespeare/r1000_alg1_sparse_kl0.03" > /dev/null; do sleep 20; done
cd ~/lf-runs/shakespeare && ./run.sh r1000_alg1_sparse_kl0.1_seq --max-rounds 1000 --max-epochs 14 --kl-warmup-epochs 1 --kl-final-weight 0.1 --share-log-sigma2 --download-sparse --recurrent-noise sequence
