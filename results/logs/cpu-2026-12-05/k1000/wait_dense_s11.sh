#!/bin/bash
# after this session's Shakespeare queue (~/lf-runs/shakespeare/queue_s11.sh): dense FedAvg's seed 1
while pgrep -f "shakespeare/queue_s11.sh|\./queue_s11.sh" > /dev/null; do sleep 30; done
cd ~/lf-runs/k1000 && ./run.sh dense_sgd_lr0.3_seed1 --dense --client-optimizer sgd --client-lr 0.3 --max-epochs 15 --seed 1
