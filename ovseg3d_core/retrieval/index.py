"""ShapeIndex: a shape database embedded once by the retrieval model, queried by text or by shape.

The index file is self-contained apart from the frozen text encoder: it stores the unit shape
embeddings, the caption bank with its embeddings and the (tiny) trained text adapter as plain
arrays, so answering a text query costs one MiniLM forward, a two-layer numpy MLP and one
matrix-vector product; loading needs no torch model construction (well under 2 s).

Indexes of ``exact_below`` shapes or more (50,000 by default) answer text queries through an
approximate inverted-file index (faiss ``IndexIVFFlat``: k-means lists, the query's ``ann_probes``
nearest lists scanned with exact inner products): at a million clustered shapes 0.67 ms p50 against
59 ms for brute force, recall@5 1.00 (benchmarks/results/scale.md). The file keeps it as two plain
arrays (list centroids and each shape's list), from which loading refills the lists in about a
second, so no opaque faiss bytes are stored and the file is not tied to a faiss version.
"""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovseg3d_core.atomic_file import atomic_savez
from ovseg3d_core.config import Config, setting

INDEX_FORMAT = "ovseg3d.shape_index"
INDEX_VERSION = 2  # 2: optional approximate-search arrays (ann_centroids, ann_lists)
READABLE_VERSIONS = (1, 2)  # version 1 files (no approximate index) still load


class RetrievalQueryError(ValueError):
    """A query cannot be answered as given (empty or oversize text, bad k, unknown shape, bad bytes)."""


class ShapeIndexError(ValueError):
    """An index file is missing, malformed or of an unsupported version."""


@dataclass
class ShapeIndexConfig(Config):
    """Query limits (oversize inputs are refused rather than truncated so callers notice) and search."""

    max_query_chars: int = setting(2000, "longest accepted query text in characters", low=1, high=1_000_000)
    exact_below: int = setting(
        50_000,
        "indexes with fewer shapes are searched exactly (brute force); larger ones through the approximate "
        "inverted-file index (faiss IVF), built once and saved with the index",
        low=1,
    )
    ann_lists: int = setting(
        0, "k-means lists of a newly built approximate index; 0 = 4 sqrt(number of shapes)", low=0, high=1_000_000
    )
    ann_probes: int = setting(
        16, "lists scanned per approximate query: more is slower and closer to exact", low=1, high=1_000_000
    )


class InvertedFileSearch:
    """Approximate top-k inner product over unit vectors: faiss ``IndexIVFFlat`` over k-means lists.

    The structure is two plain arrays: ``centroids`` (lists x D) and ``assignment`` (each vector's
    list); the faiss index is filled from them, so they are all that needs saving.
    """

    def __init__(self, embeddings: np.ndarray, centroids: np.ndarray, assignment: np.ndarray, probes: int) -> None:
        import faiss

        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.assignment = np.ascontiguousarray(assignment, dtype=np.int64)
        lists, dim = self.centroids.shape
        if embeddings.ndim != 2 or embeddings.shape[1] != dim or self.assignment.shape != (len(embeddings),):
            raise ShapeIndexError(
                f"approximate index of {self.centroids.shape} centroids and {self.assignment.shape} list ids "
                f"does not fit {embeddings.shape} embeddings"
            )
        if self.assignment.size and (self.assignment.min() < 0 or self.assignment.max() >= lists):
            raise ShapeIndexError(f"approximate index list ids fall outside its {lists} lists")
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(self.centroids)
        self.index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        self.index.is_trained = True
        # swig_ptr holds no reference: the arrays must outlive the call.
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        ids = np.arange(len(vectors), dtype=np.int64)
        self.index.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(self.assignment))
        self.index.nprobe = min(probes, lists)
        self._quantizer = quantizer  # the IVF index does not own it

    @classmethod
    def train(cls, embeddings: np.ndarray, lists: int, probes: int, seed: int = 0) -> InvertedFileSearch:
        """k-means ``lists`` centroids (10 iterations on a fixed sample of 40 vectors per list), then assign.

        At most one list per 39 vectors, the fewest faiss trains a centroid from.
        """
        import faiss

        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        lists = max(1, min(lists, len(embeddings) // 39))
        rng = np.random.default_rng(seed)
        sample = embeddings[np.sort(rng.choice(len(embeddings), min(len(embeddings), 40 * lists), replace=False))]
        # max_points_per_centroid 40: the sample is already drawn, so faiss subsamples no further.
        kmeans = faiss.Kmeans(
            embeddings.shape[1], lists, niter=10, seed=seed, spherical=True, max_points_per_centroid=40
        )
        kmeans.train(sample)
        quantizer = faiss.IndexFlatIP(embeddings.shape[1])
        quantizer.add(kmeans.centroids)
        _, assignment = quantizer.search(embeddings, 1)
        return cls(embeddings, kmeans.centroids, assignment[:, 0], probes)

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """Ids of (up to) ``k`` approximate nearest vectors; fewer when the probed lists hold fewer."""
        _, ids = self.index.search(np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), k)
        return ids[0][ids[0] >= 0]


def check_query_text(text: Any, max_chars: int) -> str:
    """Return ``text`` as a clean str, or raise :class:`RetrievalQueryError` saying what is wrong."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RetrievalQueryError(f"query bytes are not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if not isinstance(text, str):
        raise RetrievalQueryError(f"query must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise RetrievalQueryError(f"query is {len(text)} characters long; the limit is {max_chars}")
    if not text.strip():
        raise RetrievalQueryError("query text is empty")
    return text.strip()


def check_k(k: Any, size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise RetrievalQueryError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise RetrievalQueryError(f"k must be at least 1, got {k}")
    if k > size:
        raise RetrievalQueryError(f"k={k} is larger than the index ({size} entries)")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first (partial sort: O(n) + O(k log k))."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class ShapeIndex:
    """Embedded shapes + caption bank + text adapter; ``query_text`` and ``query_shape`` answer top-k."""

    def __init__(
        self,
        shape_ids: list[str],
        shape_embeddings: np.ndarray,
        captions: list[str],
        caption_embeddings: np.ndarray,
        caption_shape: np.ndarray,
        text_adapter: dict[str, np.ndarray],
        categories: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        config: ShapeIndexConfig | None = None,
        text_encoder: Any = None,
        ann_arrays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``ann_arrays`` (centroids, list of each shape) restore a saved approximate index."""
        if len(shape_ids) == 0:
            raise ShapeIndexError("an index needs at least one shape")
        if len(set(shape_ids)) != len(shape_ids):
            raise ShapeIndexError("shape ids must be unique")
        if shape_embeddings.shape[0] != len(shape_ids) or caption_embeddings.shape[0] != len(captions):
            raise ShapeIndexError("every shape and caption needs exactly one embedding row")
        self.shape_ids = list(shape_ids)
        self.shape_embeddings = np.ascontiguousarray(shape_embeddings, dtype=np.float32)
        self.captions = list(captions)
        self.caption_embeddings = np.ascontiguousarray(caption_embeddings, dtype=np.float32)
        self.caption_shape = np.asarray(caption_shape, dtype=np.int64)
        self.text_adapter = {k: np.asarray(v, dtype=np.float32) for k, v in text_adapter.items()}
        self.categories = list(categories) if categories is not None else [""] * len(shape_ids)
        self.metadata = dict(metadata or {})
        self.config = config or ShapeIndexConfig()
        self._text_encoder = text_encoder
        self._row = {sid: i for i, sid in enumerate(self.shape_ids)}
        self._ann: InvertedFileSearch | None = None
        self._ann_lock = threading.Lock()
        if ann_arrays is not None and self.approximate:
            self._ann = InvertedFileSearch(self.shape_embeddings, *ann_arrays, probes=self.config.ann_probes)

    def __len__(self) -> int:
        return len(self.shape_ids)

    @property
    def dim(self) -> int:
        return int(self.shape_embeddings.shape[1])

    @property
    def approximate(self) -> bool:
        """Whether text queries go through the approximate index (``config.exact_below`` shapes or more)."""
        return len(self) >= self.config.exact_below

    def approximate_index(self) -> InvertedFileSearch:
        """The approximate index, trained on first use if it was neither built nor loaded (~1 min per 1M shapes)."""
        with self._ann_lock:
            if self._ann is None:
                lists = self.config.ann_lists or round(4 * float(np.sqrt(len(self))))
                self._ann = InvertedFileSearch.train(self.shape_embeddings, lists, self.config.ann_probes)
            return self._ann

    def search(self, embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``k`` shapes nearest a unit ``embedding`` and their cosine scores, best first.

        Exact below ``config.exact_below`` shapes; above, the approximate index picks the rows and
        their scores are recomputed exactly (an approximate answer only ever misses shapes).
        """
        k = check_k(k, len(self))
        embedding = np.asarray(embedding, dtype=self.shape_embeddings.dtype)  # a float64 query must not upcast N x D
        if self.approximate:
            rows = self.approximate_index().search(embedding, k)
            if len(rows) == k:
                scores = np.einsum("ij,j->i", self.shape_embeddings[rows], embedding)  # no BLAS: same bits every run
                order = np.lexsort((rows, -scores))
                return rows[order], scores[order].astype(np.float32)
        scores = self.shape_embeddings @ embedding
        best = top_k(scores, k)
        return best, scores[best].astype(np.float32)

    @classmethod
    def build(
        cls,
        model,
        features,
        encoders: Any = None,
        batch_size: int = 256,
        text_encoder: Any = None,
        config: ShapeIndexConfig | None = None,
    ) -> ShapeIndex:
        """Embed every shape and caption of ``features`` (a :class:`ShapeFeatures`) with ``model``.

        ``encoders`` (a ``FrozenEncoderConfig``, default MiniLM + EfficientNet) is recorded so a
        loaded index encodes queries with the same frozen text encoder the features used. An index
        above ``config.exact_below`` shapes trains its approximate index here.
        """
        import torch

        # frozen_encoders imports torch: only building an index or encoding a query loads it.
        from ovseg3d_core.retrieval.frozen_encoders import FrozenEncoderConfig

        encoders = encoders or FrozenEncoderConfig()

        model.eval()
        shapes, texts = [], []
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                sl = slice(start, start + batch_size)
                shapes.append(
                    model.encode_shape(
                        torch.from_numpy(features.point_tokens[sl]).float(),
                        torch.from_numpy(features.token_geometry[sl]).float(),
                        torch.from_numpy(features.views[sl]).float(),
                    ).numpy()
                )
            for start in range(0, len(features.captions), batch_size):
                texts.append(model.encode_text(torch.from_numpy(features.text[start : start + batch_size])).numpy())
        adapter = model.text_adapter
        weights = {
            "w1": adapter[0].weight.detach().numpy().T,
            "b1": adapter[0].bias.detach().numpy(),
            "w2": adapter[3].weight.detach().numpy().T,
            "b2": adapter[3].bias.detach().numpy(),
        }
        dim = model.config.text_dim
        index = cls(
            features.shape_ids,
            np.concatenate(shapes),
            features.captions,
            np.concatenate(texts) if texts else np.zeros((0, model.config.dim), np.float32),
            features.caption_shape,
            weights,
            categories=features.categories,
            metadata={"model_config": model.config.to_dict(), "text_dim": dim, "encoders": encoders.to_dict()},
            config=config,
            text_encoder=text_encoder,
        )
        if index.approximate:
            index.approximate_index()
        return index

    @property
    def text_encoder(self):
        if self._text_encoder is None:  # frozen_encoders imports torch: loaded with the first text query
            from ovseg3d_core.retrieval.frozen_encoders import FrozenEncoderConfig, make_text_encoder

            self._text_encoder = make_text_encoder(FrozenEncoderConfig.from_dict(self.metadata.get("encoders", {})))
        return self._text_encoder

    def adapt_text(self, text_features: np.ndarray) -> np.ndarray:
        """Frozen text features -> unit embeddings in the shape space (the trained text adapter)."""
        a = self.text_adapter
        hidden = np.maximum(text_features @ a["w1"] + a["b1"], 0.0)
        out = hidden @ a["w2"] + a["b2"]
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return self.adapt_text(self.text_encoder.encode(texts))

    def query_text(self, text: str | bytes, k: int = 5) -> tuple[list[str], np.ndarray]:
        """Top-``k`` shape ids for a free-text description, with cosine scores (best first)."""
        text = check_query_text(text, self.config.max_query_chars)
        k = check_k(k, len(self))
        best, scores = self.search(self.embed_text([text])[0], k)
        return [self.shape_ids[i] for i in best], scores

    def query_shape(self, shape_id: str, k: int = 5) -> tuple[list[str], np.ndarray]:
        """Top-``k`` captions of the caption bank for a shape of the index, with cosine scores."""
        if shape_id not in self._row:
            raise RetrievalQueryError(f"shape {shape_id!r} is not in the index")
        k = check_k(k, len(self.captions))
        scores = self.caption_embeddings @ self.shape_embeddings[self._row[shape_id]]
        best = top_k(scores, k)
        return [self.captions[i] for i in best], scores[best].astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """One ``.npz`` (no pickles) with a JSON header naming format and version; written atomically.

        An index that searches approximately saves its approximate index too (training it first if
        needed), so loading it costs no training.
        """
        header: dict[str, Any] = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "metadata": self.metadata}
        ann: dict[str, np.ndarray] = {}
        if self.approximate:
            search = self.approximate_index()
            header["ann"] = {"method": "faiss.IndexIVFFlat", "lists": len(search.centroids), "shapes": len(self)}
            ann = {"ann_centroids": search.centroids, "ann_lists": search.assignment.astype(np.int32)}
        return atomic_savez(
            path,
            header=np.array(json.dumps(header)),
            shape_ids=np.array(self.shape_ids, dtype=str),
            categories=np.array(self.categories, dtype=str),
            shape_embeddings=self.shape_embeddings,
            captions=np.array(self.captions, dtype=str),
            caption_embeddings=self.caption_embeddings,
            caption_shape=self.caption_shape,
            **{f"adapter_{k}": v for k, v in self.text_adapter.items()},
            **ann,
        )

    @classmethod
    def load(cls, path: str | Path, config: ShapeIndexConfig | None = None, text_encoder: Any = None) -> ShapeIndex:
        """Read a file :meth:`save` wrote (or a version 1 file); anything else raises :class:`ShapeIndexError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"shape index {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                if not isinstance(header, dict) or header.get("format") != INDEX_FORMAT:
                    format_ = header.get("format") if isinstance(header, dict) else None
                    raise ShapeIndexError(f"{path} is not a shape index (format {format_!r})")
                if header.get("version") not in READABLE_VERSIONS:
                    raise ShapeIndexError(
                        f"{path} is index version {header.get('version')}, expected one of {list(READABLE_VERSIONS)}"
                    )
                adapter = {k[len("adapter_") :]: data[k] for k in data.files if k.startswith("adapter_")}
                ann_arrays = (data["ann_centroids"], data["ann_lists"]) if "ann" in header else None
                return cls(
                    data["shape_ids"].tolist(),
                    data["shape_embeddings"],
                    data["captions"].tolist(),
                    data["caption_embeddings"],
                    data["caption_shape"],
                    adapter,
                    categories=data["categories"].tolist(),
                    metadata=header.get("metadata", {}),
                    config=config,
                    text_encoder=text_encoder,
                    ann_arrays=ann_arrays,
                )
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, ShapeIndexError):
                raise
            raise ShapeIndexError(f"{path} is not a readable shape index: {exc}") from exc
