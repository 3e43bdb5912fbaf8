#!/bin/bash
# session of 2026-12-05 18:31 (issue 36, item 2): the 4-bit download over 300 rounds, as the change
# since each device's copy and as the model itself, side by side, one core each (started 20:17,
# after the seed-2 runs; a first version of this script, which waited for them, was stopped unused)
cd ~/lf-runs/k1000
./run.sh dense_q4delta_r300 --dense --client-optimizer sgd --client-lr 0.3 --codec qsgd:8 --download-codec qsgd:4 --max-epochs 15 --download-delta &
./run.sh dense_q4model_r300 --dense --client-optimizer sgd --client-lr 0.3 --codec qsgd:8 --download-codec qsgd:4 --max-epochs 15 &
wait
