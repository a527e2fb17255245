"""FAISS candidate index over item-tower embeddings, with the metric the model trains with.

The two-tower model scores by inner product, so every index here is built with
``METRIC_INNER_PRODUCT`` (L2 over dot-product vectors is a common mistake in public
examples). The kind follows the catalogue size unless chosen: exact ``IndexFlatIP`` for
small catalogues, IVF-Flat (nlist ~ 4 sqrt(N), trained on the embeddings) or HNSW for large
ones. ``nprobe`` / ``efSearch`` are tuned to the smallest value whose recall@K against
exact search on held-out queries reaches the target, and the achieved recall is recorded.
Rows of the index are positions in an id map of the dataset's string item ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from data.io import atomic_path, write_json, write_parquet

INDEX_FILE = "index.faiss"
ID_MAP = "id_map.parquet"
MANIFEST = "index_manifest.json"


class IndexMismatchError(ValueError):
    """The saved index was built for another model version or embedding size."""


@dataclass(frozen=True)
class IndexConfig:
    kind: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    k: int = 100
    target_recall: float = 0.95
    flat_max_items: int = 50_000  # auto: exact search up to this many items
    nlist: int | None = None  # IVF lists; default 4 * sqrt(N)
    hnsw_m: int = 32
    ef_construction: int = 200
    tune_queries: int = 1000
    seed: int = 0


@dataclass
class IndexManifest:
    kind: str
    metric: str
    dim: int
    n_items: int
    model_version: str
    embedding_sha256: str
    params: dict = field(default_factory=dict)
    achieved_recall: float | None = None
    recall_k: int | None = None
    faiss_version: str = ""


def embedding_sha256(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, np.float32).tobytes()).hexdigest()


def exact_top_k(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(np.ascontiguousarray(items, np.float32))
    return flat.search(np.ascontiguousarray(queries, np.float32), k)[1]


def recall_vs_exact(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-K that the approximate search returned."""
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(f[f >= 0], e)) / k for f, e in zip(found, exact, strict=True)]))


def _gpu(index):
    """Move to the GPU when a CUDA device and a GPU build of FAISS are both present."""
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


class CandidateIndex:
    def __init__(self, index, ids: np.ndarray, manifest: IndexManifest):
        self.index, self.ids, self.manifest = index, np.asarray(ids, dtype=object), manifest

    # -- building ----------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, config: IndexConfig = IndexConfig(), model_version: str = "") -> CandidateIndex:
        """Build, train and tune an inner-product index; ``queries`` are held-out user vectors."""
        import faiss

        vectors = np.ascontiguousarray(vectors, np.float32)
        n, dim = vectors.shape
        kind = config.kind
        if kind == "auto":
            kind = "flat" if n <= config.flat_max_items else "ivf"
        params: dict = {}
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = config.nlist or max(1, min(n // 39, int(round(4 * np.sqrt(n)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = config.seed
            index.train(vectors)
            params["nlist"] = nlist
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.ef_construction
            params.update(M=config.hnsw_m, efConstruction=config.ef_construction)
        else:
            raise ValueError(f"unknown index kind {config.kind!r}")
        index.add(vectors)
        manifest = IndexManifest(kind, "inner_product", dim, n, model_version, embedding_sha256(vectors), params, faiss_version=faiss.__version__)
        built = cls(_gpu(index), ids, manifest)
        built.tune(vectors, queries, config)
        return built

    def tune(self, vectors: np.ndarray, queries: np.ndarray, config: IndexConfig) -> None:
        """Smallest nprobe / efSearch whose recall@K vs exact search reaches the target."""
        rng = np.random.default_rng(config.seed)
        q = np.ascontiguousarray(queries, np.float32)
        if len(q) > config.tune_queries:
            q = q[rng.choice(len(q), config.tune_queries, replace=False)]
        k = min(config.k, self.manifest.n_items)
        exact = exact_top_k(vectors, q, k)
        kind = self.manifest.kind
        if kind == "flat":
            recall = recall_vs_exact(self.index.search(q, k)[1], exact)
        else:
            name = "nprobe" if kind == "ivf" else "efSearch"
            limit = self.manifest.params["nlist"] if kind == "ivf" else 4096
            value = 1 if kind == "ivf" else max(16, k)
            while True:
                self._set(name, value)
                recall = recall_vs_exact(self.index.search(q, k)[1], exact)
                if recall >= config.target_recall or value >= limit:
                    break
                value = min(limit, value * 2)
            self.manifest.params[name] = value
        self.manifest.achieved_recall, self.manifest.recall_k = recall, k

    def _set(self, name: str, value: int) -> None:
        if name == "nprobe":
            self.index.nprobe = value
        else:
            self.index.hnsw.efSearch = value

    # -- use ---------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top ``k``; rows index :attr:`ids` (-1 pads)."""
        k = min(k, self.index.ntotal)
        return self.index.search(np.ascontiguousarray(queries, np.float32), k)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append items (e.g. arrivals after training, embedded from content alone)."""
        known = set(self.ids.tolist())
        dup = [i for i in ids if i in known]
        if dup:
            raise ValueError(f"item id(s) already in the index: {dup[:5]}")
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.shape[1] != self.manifest.dim:
            raise IndexMismatchError(f"vectors of dim {vectors.shape[1]} for an index of dim {self.manifest.dim}")
        self.index.add(vectors)
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=object)])
        self.manifest.n_items = int(self.index.ntotal)

    # -- persistence -------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = faiss.index_gpu_to_cpu(self.index) if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(self.index).__name__ else self.index
        with atomic_path(folder / INDEX_FILE) as tmp:
            faiss.write_index(index, str(tmp))
        write_parquet(pl.DataFrame({"row": np.arange(len(self.ids)), "item_id": pl.Series(self.ids.tolist(), dtype=pl.String)}), folder / ID_MAP)
        write_json(asdict(self.manifest), folder / MANIFEST)  # last: marks the index complete
        return folder

    @classmethod
    def load(cls, folder: str | Path, model_version: str | None = None, dim: int | None = None) -> CandidateIndex:
        """Load a saved index; refuse one built for another model version or dimension."""
        import faiss

        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise FileNotFoundError(f"{folder}: no {MANIFEST} (index missing or incomplete)")
        manifest = IndexManifest(**json.loads((folder / MANIFEST).read_text()))
        if model_version is not None and manifest.model_version != model_version:
            raise IndexMismatchError(f"{folder}: index built for model version {manifest.model_version!r}, not {model_version!r}; rebuild it")
        if dim is not None and manifest.dim != dim:
            raise IndexMismatchError(f"{folder}: index has dim {manifest.dim}, the model produces {dim}; rebuild it")
        index = faiss.read_index(str(folder / INDEX_FILE))
        if manifest.kind == "ivf":
            index.nprobe = manifest.params["nprobe"]
        elif manifest.kind == "hnsw":
            index.hnsw.efSearch = manifest.params["efSearch"]
        ids = pl.read_parquet(folder / ID_MAP).sort("row")["item_id"].to_numpy()
        if len(ids) != index.ntotal:
            raise IndexMismatchError(f"{folder}: id map has {len(ids)} rows, index {index.ntotal}")
        return cls(_gpu(index), ids, manifest)
