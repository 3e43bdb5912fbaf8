#!/bin/bash
# Issue 37, 2026-12-05 (sessions 11-12): the FedAvg paper's char_lstm, Algorithm 1 with a KL weight ramped to 0.01,
# and the dense run and it continued from 300 to 600 rounds. run.sh is the one beside this file
# (its code: a clone of the repository at 54f92e7). A continued run resumes the 300-round run's
# last checkpoint in a copy of its folder: the same trajectory as a 600-round run from scratch
# (a resume ends as the run that never stopped, tests/test_fault_tolerance.py).
R="--network char_lstm --max-epochs 5"
ALG1="--kl-warmup-epochs 1 --kl-final-weight 0.01 --share-log-sigma2 --download-sparse --checkpoint-every-n-steps 10"
bash ~/lf-runs/shakespeare/run.sh big_r300_alg1_kl0.01 $R --max-rounds 300 $ALG1   # cut off at a session's end, resumed with the same command
cd ~/lf-runs/shakespeare
cp -r big_r300_dense big_r600_dense && cp -r big_r300_alg1_kl0.01 big_r600_alg1_kl0.01
bash run.sh big_r600_dense --network char_lstm --max-rounds 600 --max-epochs 9 --dense &
bash run.sh big_r600_alg1_kl0.01 --network char_lstm --max-rounds 600 --max-epochs 9 $ALG1 &
wait
