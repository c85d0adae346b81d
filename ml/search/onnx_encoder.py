"""The query tower exported to ONNX and run by ONNX Runtime: what serving encodes search queries with.

The exported graph is the model's own `BiEncoder.encode_tokens` (MiniLM, then mean pooling under the attention
mask and L2 normalisation: all that `encode_texts` computes for a query; a search query gets no projection),
traced with the TorchScript exporter (`dynamo=False`: it needs neither `onnxscript` nor a network) on a padded
batch, with dynamic batch and token axes. Two files sit next to the encoder in a saved model folder:

- `query_encoder.fp32.onnx`: the float32 graph, the torch encoder's vectors up to float rounding;
- `query_encoder.int8.onnx`: the same graph with int8 weights (ONNX Runtime's dynamic quantization, one scale per
  output channel: one scale per tensor, tried first, moved MiniLM's vectors further from torch's), activations
  quantized per call. Faster on one core; what it costs in ranking, and the latencies, are measured in
  benchmarks/results/search-encoder.md, which is what `SearchSettings.encoder_precision` is chosen on.

`QueryEncoder` tokenizes with the model's own fast tokenizer (its Rust backend, configured once: the same
truncation at `max_query_tokens` as `ml.training.encoder.tokenize`), encodes one query per pass (no padding), and
runs one `InferenceSession` with one intra-op and one inter-op thread, sequential execution: one request uses one
core, requests run side by side. Recent vectors are kept in an LRU cache keyed by the token ids.

`check_against_torch` is the registration check (the serving smoke test, `ml.registry.smoke`): each exported
file must give the torch encoder's vectors on the smoke queries, within its precision's tolerance.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ml.search.engine import ENCODER_PRECISIONS
from ml.search.query_cache import QueryCache

if TYPE_CHECKING:
    from ml.training.model import BiEncoder

log = logging.getLogger(__name__)

ONNX_FILES = {"fp32": "query_encoder.fp32.onnx", "int8": "query_encoder.int8.onnx"}
OPSET = 17  # ONNX Runtime 1.22+ runs it; 14+ is needed for scaled_dot_product_attention
# Smallest cosine between an exported file's vector and the torch encoder's, per query, at registration.
# fp32: the same float32 graph; only the order of float operations differs (cosines within 1e-6 of 1), while
# a wrong export (a mask ignored, another model's weights, a damaged file) falls far below.
# int8: quantized weights move each vector a little (the smallest cosine over the Crowdflower queries is in
# benchmarks/results/search-encoder.md); this floor leaves room for other queries and fine-tuned weights while
# still refusing an int8 file that no longer encodes like the model.
MIN_COSINE = {"fp32": 0.9999, "int8": 0.95}
# texts traced at export: two lengths, so that the traced graph applies the padding mask
_TRACE_TEXTS = ("red running shoes for a marathon", "mug")
# queries every registration check adds to the smoke queries: one word piece, a long text cut at max tokens,
# letter case and accents (the tokenizer lower-cases and strips them)
PROBE_QUERIES = (
    "a",
    "Stainless steel electric kettle 1.7 litre with blue LED light, auto shut-off and "
    "boil-dry protection, cordless 360 degree base, BPA free, fast boil, for tea and coffee",
    "Café CRÈME brûlée torch",
)


class EncoderExportError(RuntimeError):
    """The query encoder could not be exported or quantized."""


def onnx_path(folder: Path, precision: str) -> Path:
    if precision not in ENCODER_PRECISIONS:
        raise ValueError(f"precision must be one of {ENCODER_PRECISIONS}, got {precision!r}")
    return Path(folder) / ONNX_FILES[precision]


# ---------------------------------------------------------------------------------------------- export
def export_query_encoder(model: BiEncoder, tokenizer: Any, folder: Path, max_tokens: int) -> dict[str, Path]:
    """Write the float32 query encoder and its int8 copy into `folder`; returns {precision: path}.

    Exports a CPU copy of the model's MiniLM: the caller's model (maybe on a GPU, maybe training) is not touched."""
    from ml.training.encoder import tokenize
    from ml.training.model import BiEncoder

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = onnx_path(folder, "fp32"), onnx_path(folder, "int8")
    tower = BiEncoder(copy.deepcopy(model.bert).cpu(), n_items=1, trainable_layers=0).eval()
    tokens = tokenize(tokenizer, list(_TRACE_TEXTS), max_tokens)
    if bool(tokens["attention_mask"].all()):
        raise EncoderExportError("the trace texts must need padding: the exported graph must apply the mask")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # expected: the TorchScript exporter's deprecation notices, and tracer notes on shape checks that
            # hold for every input here (the mask is as long as the ids; a mask is always given)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
            torch.onnx.export(
                _QueryGraph(tower),
                (tokens["input_ids"], tokens["attention_mask"]),
                str(fp32),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                do_constant_folding=True,
            )
        quantize_int8(fp32, int8)
    except Exception as err:
        for path in (fp32, int8):
            path.unlink(missing_ok=True)
        raise EncoderExportError(f"exporting the query encoder to {folder} failed: {err}") from err
    return {"fp32": fp32, "int8": int8}


def quantize_int8(source: Path, target: Path) -> Path:
    """int8 weights (per output channel), activations quantized at run time: ONNX Runtime's dynamic quantization."""
    with _root_logging_kept():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return target


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Leave the root logger as it was: importing `onnxruntime.quantization` calls `logging.basicConfig` (INFO, a
    stderr handler), and its module-level `logging.warning` calls would add one to a bare root logger. Its advice
    to pre-process the graph first (shape inference) is dropped: tried here, it gave the same cosines to torch."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    advice = _DropMessage("Please consider to run pre-processing")
    if not handlers:
        root.addHandler(logging.NullHandler())
    root.addFilter(advice)  # a logger's filters see only records logged to it directly, as those calls are
    try:
        yield
    finally:
        root.removeFilter(advice)
        root.handlers[:] = handlers
        root.setLevel(level)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _QueryGraph(nn.Module):
    """input_ids, attention_mask [B, T] -> the query vector [B, D]: `BiEncoder.encode_tokens` with the token
    types (all 0) and positions (0..T-1) that `ml.training.encoder.tokenize` gives."""

    def __init__(self, tower: BiEncoder) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        positions = torch.arange(length, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        return self.tower.encode_tokens(
            input_ids, attention_mask, torch.zeros_like(input_ids), positions.expand(batch, length)
        )


# ---------------------------------------------------------------------------------------------- running
class QueryEncoder:
    """Search texts -> [n, D] float32 unit vectors, by ONNX Runtime on one core, with an LRU cache in front."""

    def __init__(
        self, path: Path, tokenizer: Any, max_tokens: int, cache_size: int = 0, precision: str | None = None
    ) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no exported query encoder at {path}: save the model again to export it")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2 ([CLS] and [SEP]), got {max_tokens}")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"the query encoder needs a fast tokenizer, got {type(tokenizer).__name__}")
        self.path = path
        self.precision = precision or next((p for p, name in ONNX_FILES.items() if path.name == name), "fp32")
        self.max_tokens = int(max_tokens)
        # a private copy of the Rust tokenizer, configured once: calling the Python tokenizer reconfigures its
        # backend on every call, which fails ("Already borrowed") when requests tokenize at the same time
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ValueError(f"{path} is not a query encoder ONNX Runtime can load: {err}") from err
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self.cache = QueryCache(cache_size)

    def token_ids(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Each text's token ids as the encoder sees them ([CLS] ... [SEP], cut at max_tokens): the cache keys."""
        return [tuple(e.ids) for e in self._tokenizer.encode_batch([str(t) for t in texts])]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), D] vectors; texts seen recently come from the cache, each other one gets its own pass.

        One query per pass, never a padded batch: int8 activations are quantized with one scale per tensor, so in
        a batch a query's vector would depend on the other queries beside it (and on padding). One at a time, a
        query has one vector, whoever asks and whatever the cache holds: evaluation measures what serving gives."""
        keys = self.token_ids(texts)
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        for row, key in enumerate(keys):
            vector = self.cache.get(key)
            if vector is None:
                vector = self.run(key)
                self.cache.put(key, vector)
            out[row] = vector
        return out

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """[D] the encoder's forward pass on one query's token ids (no cache)."""
        input_ids = np.asarray([ids], dtype=np.int64)
        (vectors,) = self._session.run(
            ["embedding"], {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
        )
        return np.asarray(vectors[0], dtype=np.float32)


def load_query_encoder(
    folder: Path, tokenizer: Any, max_tokens: int, precision: str, cache_size: int
) -> QueryEncoder | None:
    """The folder's exported encoder of `precision`, or None when the model was saved without one."""
    path = onnx_path(folder, precision)
    if not path.is_file():
        return None
    return QueryEncoder(path, tokenizer, max_tokens, cache_size=cache_size, precision=precision)


# ---------------------------------------------------------------------------------------------- registration check
def check_against_torch(
    folder: Path, tokenizer: Any, max_tokens: int, torch_vectors: np.ndarray, queries: Sequence[str]
) -> dict[str, Any]:
    """Compare each exported file in `folder` with the torch encoder's `torch_vectors` of `queries`.

    Returns {"ok", "min_cosine": {precision: value}, "errors": [...], "absent": [...]}: ok is False when a file
    does not load or any query's cosine is under `MIN_COSINE` for its precision. A folder with no exported file
    (a model saved before the export existed) is ok: it serves with torch."""
    result: dict[str, Any] = {"ok": True, "min_cosine": {}, "errors": [], "absent": []}
    expected = np.asarray(torch_vectors, dtype=np.float32)
    if len(expected) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(expected)} torch vectors")
    for precision in ENCODER_PRECISIONS:
        path = onnx_path(folder, precision)
        if not path.is_file():
            result["absent"].append(ONNX_FILES[precision])
            continue
        try:
            got = QueryEncoder(path, tokenizer, max_tokens, precision=precision).encode(queries)
        except Exception as err:
            result["ok"] = False
            result["errors"].append(f"{path.name} does not run: {err}")
            continue
        if got.shape != expected.shape:
            result["ok"] = False
            result["errors"].append(
                f"{path.name} gives vectors of shape {got.shape}, the torch encoder {expected.shape}"
            )
            continue
        cosines = _cosines(got, expected)
        worst = int(np.argmin(cosines))
        result["min_cosine"][precision] = float(cosines[worst])
        if cosines[worst] < MIN_COSINE[precision]:
            result["ok"] = False
            result["errors"].append(
                f"{path.name} disagrees with the torch query encoder: cosine "
                f"{cosines[worst]:.4f} < {MIN_COSINE[precision]} on query {queries[worst]!r}; "
                "the exported file is not this model's encoder (export it again with "
                "Recommender.save)"
            )
    return result


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, 1e-12)
