"""Peer baseline for benches/train.sh: PyTorch on the CPU with the model, optimizer, batch size
and thread count Sluice's run uses, on the same Parquet files; one pass over every row per
epoch (in order, as Sluice's steps take each split's share), timed per epoch (the data is
loaded into memory first and not timed).
Usage: torch_train.py DATA_DIR MODEL EPOCHS BATCH THREADS
  MODEL: logistic-regression | mlp:HIDDEN; BATCH: rows per step, 0 for all rows (one step)"""
import glob
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch

data, model, epochs, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(1)
tables = [pq.read_table(f) for f in sorted(glob.glob(f"{data}/*.parquet"))]
cols = [c for c in tables[0].column_names if c != "label"]
X = torch.from_numpy(np.concatenate([np.column_stack([t[c].to_numpy() for c in cols]) for t in tables]).astype(np.float32))
y = torch.from_numpy(np.concatenate([t["label"].to_numpy() for t in tables]).astype(np.float32))
n, d = X.shape
if model == "logistic-regression":
    net = torch.nn.Linear(d, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
else:
    hidden = int(model.split(":")[1])
    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
loss_fn = torch.nn.BCEWithLogitsLoss()
step = n if batch <= 0 else batch
for e in range(1, epochs + 1):
    t0 = time.perf_counter()
    for lo in range(0, n, step):
        xb, yb = X[lo:lo + step], y[lo:lo + step]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb).squeeze(1), yb)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    with torch.no_grad():
        acc = float(((net(X[:200000]).squeeze(1) > 0).float() == y[:200000]).float().mean())
    print(json.dumps({"epoch": e, "seconds": secs, "samples_per_s": n / secs, "accuracy": acc}))
