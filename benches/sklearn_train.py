"""Peer baseline for benches/train.sh: scikit-learn on the same Parquet files, one pass over
every row per epoch, timed per epoch (the data is loaded into memory first and not timed).
Usage: sklearn_train.py DATA_DIR MODEL EPOCHS   (MODEL: logistic-regression | mlp:HIDDEN)"""
import glob
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq

data, model, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
tables = [pq.read_table(f) for f in sorted(glob.glob(f"{data}/*.parquet"))]
cols = [c for c in tables[0].column_names if c != "label"]
X = np.concatenate([np.column_stack([t[c].to_numpy() for c in cols]) for t in tables]).astype(np.float32)
y = np.concatenate([t["label"].to_numpy() for t in tables]).astype(np.int64)
if model == "logistic-regression":
    from sklearn.linear_model import SGDClassifier
    clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, random_state=1)
    step = lambda: clf.partial_fit(X, y, classes=[0, 1])
else:
    from sklearn.neural_network import MLPClassifier
    hidden = int(model.split(":")[1])
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), batch_size=8192, learning_rate_init=0.01, random_state=1)
    step = lambda: clf.partial_fit(X, y, classes=[0, 1])
for e in range(1, epochs + 1):
    t0 = time.perf_counter()
    step()
    secs = time.perf_counter() - t0
    acc = float((clf.predict(X[:200000]) == y[:200000]).mean())
    print(json.dumps({"epoch": e, "seconds": secs, "samples_per_s": len(y) / secs, "accuracy": acc}))
