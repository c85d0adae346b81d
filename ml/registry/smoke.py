"""Serving smoke test: load a registered model in a fresh process and answer real requests in time.

A model that cannot load, or answers wrongly or too slowly, never becomes champion. "Too slowly" is the
median answer over the budget: one slow answer among a handful says more about a busy machine than
about the model, a slow median does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_SCRIPT = r"""
import json, sys, time
import mlflow, pandas as pd
args = json.loads(sys.argv[1])
mlflow.set_tracking_uri(args["tracking_uri"])
t0 = time.perf_counter()
model = mlflow.pyfunc.load_model(args["model_uri"])
load_s = time.perf_counter() - t0
frame = pd.DataFrame({"history": args["histories"] + [[]] * len(args["queries"]),
                      "query": [None] * len(args["histories"]) + args["queries"]})
model.predict(frame.head(1), params={"k": args["k"]})  # warm-up
latencies = []
for i in range(len(frame)):
    t = time.perf_counter()
    out = model.predict(frame.iloc[[i]], params={"k": args["k"]})
    latencies.append(time.perf_counter() - t)
    ids = out["item_ids"].iloc[0]
    if len(ids) != args["k"]:
        raise SystemExit(f"row {i}: expected {args['k']} items, got {len(ids)}")
print(json.dumps({"load_seconds": load_s, "max_latency_ms": 1000 * max(latencies),
                  "p50_latency_ms": 1000 * sorted(latencies)[len(latencies) // 2], "requests": len(latencies)}))
"""


def smoke_test(tracking_uri: str, model_uri: str, histories: list[list[str]], queries: list[str], k: int = 10,
               latency_budget_ms: float = 1000.0, timeout_s: float = 300.0) -> dict[str, Any]:
    args = json.dumps({"tracking_uri": tracking_uri, "model_uri": model_uri, "histories": histories,
                       "queries": queries, "k": k})
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, args], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no answer within {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"ok": False, "error": " | ".join(tail) or f"exit code {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["latency_budget_ms"] = latency_budget_ms
    result["ok"] = result["p50_latency_ms"] <= latency_budget_ms
    if not result["ok"]:
        result["error"] = (f"median answer {result['p50_latency_ms']:.0f} ms > budget {latency_budget_ms:.0f} ms "
                           f"(slowest {result['max_latency_ms']:.0f} ms)")
    return result
