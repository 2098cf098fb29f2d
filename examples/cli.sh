#!/usr/bin/env bash
# The tfq8 command line on a tiny model: convert, inspect, check, bench.
# Run from the repository root with the package installed: bash examples/cli.sh
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL=3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python - "$work" <<'PY'
import sys, keras, numpy as np
from sklearn.datasets import load_digits
d = load_digits(); x = (d.images[..., None] / 16.0).astype(np.float32); y = d.target
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                      keras.layers.Flatten(), keras.layers.Dense(10)])
m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
m.fit(x[:1200], y[:1200], epochs=10, verbose=0)
m.save(f"{sys.argv[1]}/digits.keras")
np.save(f"{sys.argv[1]}/calib.npy", x[:200])
np.savez(f"{sys.argv[1]}/test.npz", x=x[1200:], y=y[1200:])
PY

tfq8 convert "$work/digits.keras" --data "$work/calib.npy" --output "$work/digits_int8.tflite" \
    --calibration-out "$work/stats.npz"
tfq8 inspect "$work/digits_int8.tflite" --strict
tfq8 check "$work/digits_int8.tflite" --reference "$work/digits.keras" --data "$work/test.npz" --top 5
tfq8 bench "$work/digits_int8.tflite" --reference "$work/digits.keras" --threads 1 --time-budget 1
tfq8 check "$work/digits_int8.tflite" --reference "$work/digits.keras" --data "$work/test.npz" --json \
    | python -c "import json, sys; r = json.load(sys.stdin); print('agreement', r['agreement'])"
# A broken file is one line on stderr and a non-zero exit status:
head -c 300 "$work/digits_int8.tflite" > "$work/broken.tflite"
tfq8 inspect "$work/broken.tflite" || echo "exit status $?"
