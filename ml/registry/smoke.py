"""Serving smoke test: verify and load a registered model in a fresh process and answer real requests in time.

Before loading, the version's recommender folder is checked against the digests recorded at registration
(`ml.registry.integrity`): a file changed in the artifact store since is refused, never loaded.

A model that cannot load, or answers wrongly or too slowly, never becomes champion. "Too slowly" is the
median answer over the budget: one slow answer among a handful says more about a busy machine than
about the model, a slow median does not.

"Wrongly" includes the exported query encoders (`ml.search.onnx_encoder`): serving encodes search queries with
them, so each file in the folder must give the torch encoder's vectors on the smoke queries (and a few probe
queries: one word piece, a text cut at the token limit, accents and capitals), within its precision's cosine
floor (`MIN_COSINE`). A file that does not load or disagrees fails the test, with the file and the query named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

_SCRIPT = r"""
import json, sys, tempfile, time
from pathlib import Path
import mlflow, pandas as pd, yaml
from mlflow.tracking import MlflowClient
from ml.registry.integrity import IntegrityError, verify_folder
from ml.registry.registration import recommender_relpath
args = json.loads(sys.argv[1])
mlflow.set_tracking_uri(args["tracking_uri"])
mlflow.set_registry_uri(args["tracking_uri"])
scratch = tempfile.TemporaryDirectory(prefix="vetted-smoke-")
t0 = time.perf_counter()
local = Path(mlflow.artifacts.download_artifacts(artifact_uri=args["model_uri"], dst_path=scratch.name))
tags = MlflowClient(args["tracking_uri"], registry_uri=args["tracking_uri"]).get_model_version(
    args["name"], args["version"]).tags
folder = local / recommender_relpath(yaml.safe_load((local / "MLmodel").read_text()), args["model_uri"])
try:
    verify_folder(folder, tags, what=f"{args['name']} v{args['version']}")
except IntegrityError as err:
    print(json.dumps({"ok": False, "integrity": "refused", "error": str(err)}))
    raise SystemExit(0)
from ml.search.onnx_encoder import PROBE_QUERIES, check_against_torch
from ml.training.recommender import Recommender
t_check = time.perf_counter()
reference = Recommender.load(folder, query_encoder="torch")
probes = [q for q in args["queries"] if q] + list(PROBE_QUERIES)
encoders = check_against_torch(folder, reference.tokenizer, reference.settings.max_query_tokens,
                               reference.torch_query_vectors(probes), probes)
del reference
check_s = time.perf_counter() - t_check
if not encoders["ok"]:
    print(json.dumps({"ok": False, "integrity": "verified", "encoders": encoders,
                      "error": "query encoder check failed: " + "; ".join(encoders["errors"])}))
    raise SystemExit(0)
model = mlflow.pyfunc.load_model(str(local))  # the very files just verified
load_s = time.perf_counter() - t0 - check_s
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
print(json.dumps({"load_seconds": load_s, "max_latency_ms": 1000 * max(latencies), "integrity": "verified",
                  "p50_latency_ms": 1000 * sorted(latencies)[len(latencies) // 2], "requests": len(latencies),
                  "encoders": encoders, "query_encoder": model.unwrap_python_model().recommender.query_runtime}))
"""


def registered_name_version(model_uri: str) -> tuple[str, str]:
    """(name, version) of a `models:/<name>/<version>` URI: the smoke test checks registered versions only."""
    parts = model_uri.split("/")
    if not model_uri.startswith("models:/") or len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(
            f"{model_uri!r} is not models:/<name>/<version>: the smoke test verifies a registered "
            "version's artifacts against its digest tags, so it needs the version"
        )
    return parts[1], parts[2]


def smoke_test(
    tracking_uri: str,
    model_uri: str,
    histories: list[list[str]],
    queries: list[str],
    k: int = 10,
    latency_budget_ms: float = 1000.0,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Download `model_uri` (models:/<name>/<version>) in a fresh process, verify its recommender folder against
    the version's digest tags, load it and time `histories` and `queries` at top-`k`.

    A folder that differs from what was registered is refused before loading: ok false, `integrity` "refused"
    and the reason in `error`. An exported query encoder that does not load or disagrees with the torch encoder
    fails it too: ok false, the comparison in `encoders` and the reason in `error`."""
    name, version = registered_name_version(model_uri)
    args = json.dumps(
        {
            "tracking_uri": tracking_uri,
            "model_uri": model_uri,
            "name": name,
            "version": version,
            "histories": histories,
            "queries": queries,
            "k": k,
        }
    )
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"no answer within {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"ok": False, "error": " | ".join(tail) or f"exit code {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["latency_budget_ms"] = latency_budget_ms
    if result.get("ok") is False:  # refused by the integrity check, or the query encoders disagree
        return result
    result["ok"] = result["p50_latency_ms"] <= latency_budget_ms
    if not result["ok"]:
        result["error"] = (
            f"median answer {result['p50_latency_ms']:.0f} ms > budget {latency_budget_ms:.0f} ms "
            f"(slowest {result['max_latency_ms']:.0f} ms)"
        )
    return result
