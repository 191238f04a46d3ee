"""The noisy oracle: a simulated 2D vision-language feature source for benchmarks (DESIGN §5).

No CLIP-family weights exist on the benchmark machines, so segmentation quality is measured with
this stand-in. It reads a ground-truth class-id image and emits, per pixel, the text embedding of
the class name in the paired text encoder's space, corrupted with the failure modes real 2D VLMs
show. Real models misread an object the same way from every side, so errors come in two kinds:

- per object, drawn once per scan and seed from the object's instance id (the same in every view
  that sees it): confusion with a semantically close class, or a miss;
- per view, drawn independently for every segment of every view, on top of the object errors:
  whole-segment confusion with a semantically close class, missed segments (no feature at all,
  ``valid`` False), mask bleeding across a segment's boundary, per-segment and per-pixel noise.

Confusions pick the emitted class by a softmax over text-embedding cosine, so a chair becomes a
sofa more often than a wall. A segment is a connected component of one class in the
(output-resolution) view. Every rate is a parameter; ``seed`` with the instance id fixes each
object's draw and ``(seed, view_index)`` each view's. Named presets (:data:`NOISE_PRESETS`) set
the mix; every report names the preset and its rates. Its results are always reported as "noisy
oracle", never as a vision-language model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ovseg3d_core.config import Config, ConfigError, setting
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.encoders.base import EncoderError, FrameFeatures, TextEncoder, check_texts, l2_normalise
from ovseg3d_core.frame import RGBDFrame

LOG = logging.getLogger(__name__)

IGNORE_LABEL = 255
NO_FEATURE = -1


# Error mixes: each is the set of rates at severity 1; severity s in [0, 1] scales every rate
# linearly. ``mixed`` (per-object confusion equal to per-view confusion, an object missed in every
# view a quarter as often as a segment in one view) is the scale of the presets: ``high`` is s = 1
# and ``default`` the severity at which mean multi-view fusion scores what real 2D fusion does on
# ScanNet20 (about 50 mIoU: X-Decoder 50.2, OpenScene's 2D fusion about 50), measured by
# benchmarks/calibrate_oracle.py. ``per_object`` (object errors dominate, per-view errors at a
# quarter of ``mixed``) and ``per_view`` (no object errors) span the sensitivity table of
# benchmarks/bench_segmentation.py, where each is set to the severity that gives the same fused score.
_PER_VIEW_FULL = {
    "confusion_rate": 0.3,
    "miss_rate": 0.2,
    "bleed_rate": 0.7,
    "bleed_pixels": 8,
    "segment_noise": 0.3,
    "pixel_noise": 0.8,
}
ERROR_MIXES: dict[str, dict[str, float]] = {
    "mixed": {"object_confusion_rate": 0.3, "object_miss_rate": 0.05, **_PER_VIEW_FULL},
    "per_object": {
        "object_confusion_rate": 0.6,
        "object_miss_rate": 0.1,
        **{name: value / 4 for name, value in _PER_VIEW_FULL.items()},  # bleed_pixels rounds at use
    },
    "per_view": {
        "object_confusion_rate": 0.0,
        "object_miss_rate": 0.0,
        "confusion_rate": 0.5,
        "miss_rate": 0.3,
        "bleed_rate": 1.0,
        "bleed_pixels": 12,
        "segment_noise": 0.5,
        "pixel_noise": 1.2,
    },
}
FULL_SEVERITY = ERROR_MIXES["mixed"]
DEFAULT_SEVERITY = 0.422  # benchmarks/results/oracle_calibration.md: mean fusion 52.0 mIoU over 8 seeds


def mixed_rates(severity: float, mix: str = "mixed") -> dict[str, float]:
    """The error rates at ``severity`` on ``mix`` (0 = a perfect 2D source, 1 = the mix's full rates)."""
    if not 0.0 <= severity <= 1.0:
        raise ConfigError(f"severity must lie in [0, 1], got {severity}")
    if mix not in ERROR_MIXES:
        raise ConfigError(f"unknown error mix {mix!r}; known: {sorted(ERROR_MIXES)}")
    full = ERROR_MIXES[mix]
    rates = {name: round(value * severity, 4) for name, value in full.items()}
    rates["bleed_pixels"] = round(full["bleed_pixels"] * severity)
    return rates


_DEFAULT = mixed_rates(DEFAULT_SEVERITY)


@dataclass
class NoisyOracleConfig(Config):
    class_names: list[str] = setting(
        list(SCANNET20_CLASSES), "class names indexed by the ground-truth label image's ids (ScanNet20 order)"
    )
    confusion_rate: float = setting(
        _DEFAULT["confusion_rate"], "probability that a segment is emitted as another class", low=0.0, high=1.0
    )
    confusion_temperature: float = setting(
        0.05, "softmax temperature over text cosine picking the confused class (lower = closer classes)", low=1e-3
    )
    miss_rate: float = setting(_DEFAULT["miss_rate"], "probability that a segment emits no feature", low=0.0, high=1.0)
    object_confusion_rate: float = setting(
        _DEFAULT["object_confusion_rate"],
        "probability that an object is emitted as another class in every view (drawn once per object)",
        low=0.0,
        high=1.0,
    )
    object_miss_rate: float = setting(
        _DEFAULT["object_miss_rate"],
        "probability that an object emits no feature in any view (drawn once per object)",
        low=0.0,
        high=1.0,
    )
    bleed_rate: float = setting(
        _DEFAULT["bleed_rate"], "probability that a segment bleeds across its boundary", low=0.0, high=1.0
    )
    bleed_pixels: int = setting(_DEFAULT["bleed_pixels"], "bleeding width in input-image pixels", low=0, high=64)
    segment_noise: float = setting(
        _DEFAULT["segment_noise"],
        "norm of a per-segment Gaussian offset, relative to the unit class embedding",
        low=0.0,
    )
    pixel_noise: float = setting(
        _DEFAULT["pixel_noise"], "norm of per-pixel Gaussian noise, relative to the unit class embedding", low=0.0
    )
    stride: int = setting(4, "output stride: features are emitted on every stride-th input pixel", low=1, high=32)
    ignore_label: int = setting(IGNORE_LABEL, "class id of unlabeled pixels (negative ids are ignored too)")
    normalize: bool = setting(True, "L2-normalise each emitted feature")
    seed: int = setting(0, "seed; with the view index it fixes every random draw", low=0)

    @classmethod
    def preset(cls, name: str, **overrides: object) -> NoisyOracleConfig:
        """A named error mix (:data:`NOISE_PRESETS`): ``independent``, ``low``, ``default``, ``high``."""
        if name not in NOISE_PRESETS:
            raise ConfigError(f"unknown noisy-oracle preset {name!r}; known: {sorted(NOISE_PRESETS)}")
        return cls(**{**NOISE_PRESETS[name], **overrides})

    def rates(self) -> dict[str, float]:
        """The error rates that define a preset (what every report prints beside its name)."""
        return {name: getattr(self, name) for name in RATE_FIELDS}

    @property
    def preset_name(self) -> str:
        """The preset these rates are, or ``custom``."""
        rates = self.rates()
        return next((name for name, preset in NOISE_PRESETS.items() if preset == rates), "custom")

    def describe(self) -> str:
        """``preset default (object confusion 0.1, ...)``, for log lines and report headers."""
        r = self.rates()
        return (
            f"preset {self.preset_name} (per object: confusion {r['object_confusion_rate']:g}, miss "
            f"{r['object_miss_rate']:g}; per view: confusion {r['confusion_rate']:g}, miss {r['miss_rate']:g}, "
            f"bleed {r['bleed_rate']:g} x {r['bleed_pixels']:g} px, noise {r['segment_noise']:g}/{r['pixel_noise']:g})"
        )


RATE_FIELDS = (
    "object_confusion_rate",
    "object_miss_rate",
    "confusion_rate",
    "miss_rate",
    "bleed_rate",
    "bleed_pixels",
    "segment_noise",
    "pixel_noise",
)
_PER_VIEW_ONLY = {"object_confusion_rate": 0.0, "object_miss_rate": 0.0}
NOISE_PRESETS: dict[str, dict[str, float]] = {
    # The first default: per-view errors only, kept for continuity with earlier reports.
    "independent": {
        **_PER_VIEW_ONLY,
        "confusion_rate": 0.15,
        "miss_rate": 0.1,
        "bleed_rate": 0.5,
        "bleed_pixels": 4,
        "segment_noise": 0.2,
        "pixel_noise": 0.5,
    },
    "low": mixed_rates(DEFAULT_SEVERITY / 2),
    "default": _DEFAULT,
    "high": mixed_rates(1.0),
}


def frame_inputs(config: NoisyOracleConfig) -> tuple[str, ...]:
    """RGBDFrame fields the oracle reads: the rendered ground truth, which no camera publishes."""
    per_object = config.object_confusion_rate > 0 or config.object_miss_rate > 0
    return ("labels", "instances") if per_object else ("labels",)


@dataclass
class OracleObject:
    """What the noisy oracle does to one object in every view that sees it."""

    instance: int
    true_class: int
    emitted_class: int  # NO_FEATURE when missed
    missed: bool


@dataclass
class OracleSegment:
    """What the noisy oracle did to one segment of one view (for statistics and debugging)."""

    true_class: int
    emitted_class: int
    missed: bool
    bled: bool
    pixels: int


@dataclass
class OracleView(FrameFeatures):
    """Noisy-oracle output: features + validity, the emitted class per pixel and per-segment records."""

    class_map: np.ndarray
    stride: int
    segments: list[OracleSegment]
    objects: list[OracleObject]


class NoisyOracle:
    """Ground-truth class-id image -> corrupted per-pixel text-space features (the noisy oracle)."""

    def __init__(
        self,
        class_names: Sequence[str],
        text_encoder: TextEncoder,
        config: NoisyOracleConfig | None = None,
    ) -> None:
        self.config = config or NoisyOracleConfig()
        self.class_names = check_texts(class_names)
        if not self.class_names:
            raise EncoderError("the noisy oracle needs at least one class name")
        self.class_embeddings = l2_normalise(text_encoder.encode(self.class_names))
        self.dim = int(self.class_embeddings.shape[1])
        self.confusion_probabilities = self._confusion_probabilities()
        cfg = self.config
        self.description = (
            f"noisy oracle, a benchmark instrument (confusion {cfg.confusion_rate:g}, miss {cfg.miss_rate:g}, "
            f"bleed {cfg.bleed_rate:g}, noise {cfg.segment_noise:g}/{cfg.pixel_noise:g}, seed {cfg.seed})"
        )
        LOG.info(
            "noisy oracle: %d classes, confusion %.2f, miss %.2f, bleed %.2f x %d px, noise %.2f/%.2f",
            len(self.class_names),
            self.config.confusion_rate,
            self.config.miss_rate,
            self.config.bleed_rate,
            self.config.bleed_pixels,
            self.config.segment_noise,
            self.config.pixel_noise,
        )

    def _confusion_probabilities(self) -> np.ndarray:
        """Row c: probability of emitting class j when class c is confused (softmax of cosine / T, j != c)."""
        cosine = self.class_embeddings @ self.class_embeddings.T
        logits = cosine / self.config.confusion_temperature
        np.fill_diagonal(logits, -np.inf)
        if len(self.class_names) == 1:
            return np.ones((1, 1))
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        offset = self.config.stride // 2
        return -(-(height - offset) // self.config.stride), -(-(width - offset) // self.config.stride)

    def extract_frame(self, frame: RGBDFrame, view_index: int = 0) -> OracleView:
        """Features from the frame's rendered ``labels`` (and ``instances``); ``view_index`` picks the view's draws."""
        if frame.labels is None:
            raise EncoderError(f"frame {frame.name or '?'} has no label image; the noisy oracle needs one")
        return self.extract_labels(frame.labels, view_index, instances=getattr(frame, "instances", None))

    def extract_labels(
        self,
        labels: np.ndarray,
        view_index: int = 0,
        with_features: bool = True,
        instances: np.ndarray | None = None,
    ) -> OracleView:
        """Corrupt one view's class-id image and emit its features (skipped if ``with_features`` is False).

        ``instances`` (object ids aligned with ``labels``, negative = none) is needed when any
        per-object rate is non-zero: those errors follow the object, not the view.
        """
        cfg = self.config
        classes = self._sample_labels(labels)
        objects: list[OracleObject] = []
        sampled_instances = None
        if instances is not None:
            if np.shape(instances) != np.shape(labels):
                raise EncoderError(f"instance image {np.shape(instances)} does not match labels {np.shape(labels)}")
            sampled_instances = self._sample(instances, "instance")
        if cfg.object_confusion_rate > 0 or cfg.object_miss_rate > 0:
            if sampled_instances is None:
                raise EncoderError(
                    f"per-object errors ({cfg.describe()}) need an instance-id image aligned with the labels"
                )
            classes, objects = self._object_errors(classes, sampled_instances)
        segment_map, segment_class = _segments(classes)
        decisions = np.random.default_rng([cfg.seed, view_index, 0])
        noise = np.random.default_rng([cfg.seed, view_index, 1])
        count = len(segment_class)
        if sampled_instances is None:
            draws = decisions.random((count, 4))
        else:  # keyed by what the segment shows, so slightly different renders of one view draw alike
            owners = _segment_owners(segment_map, sampled_instances, count)
            draws = np.array(
                [
                    np.random.default_rng([cfg.seed, view_index, 3, c, o + 1]).random(4)
                    for c, o in zip(segment_class, owners, strict=True)
                ]
            ).reshape(count, 4)
        missed = draws[:, 0] < cfg.miss_rate
        confused = (draws[:, 1] < cfg.confusion_rate) & (len(self.class_names) > 1)
        bled = (draws[:, 2] < cfg.bleed_rate) & ~missed
        cumulative = np.cumsum(self.confusion_probabilities[segment_class], axis=1)
        target = np.minimum((cumulative < draws[:, 3:4] * cumulative[:, -1:]).sum(axis=1), len(self.class_names) - 1)
        emitted = np.where(confused, target, segment_class)
        emitted = np.where(missed, NO_FEATURE, emitted)

        source = segment_map - 1
        if count:
            source[(source >= 0) & missed[np.maximum(source, 0)]] = NO_FEATURE
        radius = round(cfg.bleed_pixels / cfg.stride)
        if radius > 0 and bled.any():
            _bleed(segment_map, source, decisions.permutation(np.flatnonzero(bled)), radius)
        class_map = np.full(classes.shape, NO_FEATURE, dtype=np.int32)
        class_map[source >= 0] = emitted[source[source >= 0]]
        valid = class_map >= 0
        segments = [
            OracleSegment(int(c), int(e), bool(m), bool(b), int(n))
            for c, e, m, b, n in zip(
                segment_class,
                emitted,
                missed,
                bled,
                np.bincount(segment_map.ravel(), minlength=count + 1)[1:],
                strict=True,
            )
        ]
        if with_features:
            features = self._features(source, emitted, noise)
        else:
            features = np.zeros((*class_map.shape, 0), dtype=np.float32)
        return OracleView(
            features=features, valid=valid, class_map=class_map, stride=cfg.stride, segments=segments, objects=objects
        )

    def _object_errors(self, classes: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, list[OracleObject]]:
        """Apply each visible object's own draw (fixed by seed and instance id, so alike in every view)."""
        cfg = self.config
        out = classes.copy()
        present = (instances >= 0) & (classes >= 0)
        pairs = np.unique(np.stack([instances[present], classes[present]], axis=1), axis=0)
        objects = []
        for instance, true_class in pairs:
            miss, confuse, pick = np.random.default_rng([cfg.seed, int(instance), 2]).random(3)
            emitted = int(true_class)
            if miss < cfg.object_miss_rate:
                emitted = NO_FEATURE
            elif confuse < cfg.object_confusion_rate and len(self.class_names) > 1:
                cumulative = np.cumsum(self.confusion_probabilities[true_class])
                emitted = int(min((cumulative < pick * cumulative[-1]).sum(), len(self.class_names) - 1))
            if emitted != true_class:
                out[present & (instances == instance) & (classes == true_class)] = emitted
            objects.append(OracleObject(int(instance), int(true_class), emitted, emitted == NO_FEATURE))
        return out, objects

    def _sample(self, image: np.ndarray, what: str) -> np.ndarray:
        """An integer id image subsampled to the output grid."""
        image = np.asarray(image)
        if image.ndim != 2 or image.size == 0 or not np.issubdtype(image.dtype, np.integer):
            raise EncoderError(f"expected a non-empty HxW integer {what}-id image, got {image.shape} {image.dtype}")
        offset = self.config.stride // 2
        return image[offset :: self.config.stride, offset :: self.config.stride].astype(np.int64)

    def _sample_labels(self, labels: np.ndarray) -> np.ndarray:
        """Validate and subsample the class-id image to the output grid; ignored pixels become -1."""
        sampled = self._sample(labels, "class")
        ignored = (sampled == self.config.ignore_label) | (sampled < 0)
        if (sampled[~ignored] >= len(self.class_names)).any():
            bad = int(sampled[~ignored].max())
            raise EncoderError(
                f"class id {bad} is outside the {len(self.class_names)} class names "
                f"(ignore label is {self.config.ignore_label})"
            )
        return np.where(ignored, NO_FEATURE, sampled)

    def _features(self, source: np.ndarray, emitted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each emitting pixel: its segment's class embedding + segment offset + pixel noise; zero elsewhere."""
        count = len(emitted)
        scale = 1.0 / np.sqrt(self.dim)
        segment_vectors = np.zeros((count + 1, self.dim), dtype=np.float32)
        segment_vectors[:count] = self.class_embeddings[np.maximum(emitted, 0)]
        segment_vectors[:count] += rng.standard_normal((count, self.dim), dtype=np.float32) * (
            self.config.segment_noise * scale
        )
        if self.config.pixel_noise > 0:
            features = rng.standard_normal((*source.shape, self.dim), dtype=np.float32)
            features *= self.config.pixel_noise * scale
        else:
            features = np.zeros((*source.shape, self.dim), dtype=np.float32)
        features += segment_vectors[np.where(source >= 0, source, count)]
        features[source < 0] = 0.0
        if self.config.normalize:
            norms = np.sqrt(np.einsum("hwd,hwd->hw", features, features))
            features /= np.maximum(norms, 1e-12)[..., None]
        return features


def _segments(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components per class: a map of 1-based segment ids (0 = ignored) and each segment's class."""
    segment_map = np.zeros(classes.shape, dtype=np.int64)
    segment_class: list[np.ndarray] = []
    offset = 0
    for cls in np.unique(classes[classes >= 0]):
        components, count = ndimage.label(classes == cls)
        inside = components > 0
        segment_map[inside] = components[inside] + offset
        segment_class.append(np.full(count, cls, dtype=np.int64))
        offset += count
    return segment_map, np.concatenate(segment_class) if segment_class else np.zeros(0, dtype=np.int64)


def _segment_owners(segment_map: np.ndarray, instances: np.ndarray, count: int) -> list[int]:
    """The object id most of each segment's pixels belong to (-1 where none); segments are 1-based in the map."""
    inside = segment_map > 0
    if count == 0:
        return []
    keys = segment_map[inside].astype(np.int64) * (int(instances.max(initial=-1)) + 2) + instances[inside] + 1
    pairs, votes = np.unique(keys, return_counts=True)
    segment, owner = np.divmod(pairs, int(instances.max(initial=-1)) + 2)
    best = np.full(count + 1, -1, dtype=np.int64)
    order = np.lexsort((votes, segment))  # per segment, the most-voted owner comes last
    best[segment[order]] = owner[order] - 1
    return best[1:].tolist()


def _bleed(segment_map: np.ndarray, source: np.ndarray, bleeding: np.ndarray, radius: int) -> None:
    """Let each bleeding segment (0-based ids) take over pixels within ``radius`` outside itself."""
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    height, width = segment_map.shape
    boxes = ndimage.find_objects(segment_map)
    for index in bleeding:
        rows, cols = boxes[index]
        r0, r1 = max(rows.start - radius, 0), min(rows.stop + radius, height)
        c0, c1 = max(cols.start - radius, 0), min(cols.stop + radius, width)
        mask = segment_map[r0:r1, c0:c1] == index + 1
        ring = ndimage.binary_dilation(mask, structure=disk) & ~mask
        source[r0:r1, c0:c1][ring] = index
