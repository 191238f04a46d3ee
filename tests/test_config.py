"""Typed configs: strict loading, range checks and the flat parameter view the nodes declare."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ovseg3d_core.config import Config, ConfigError, setting


@dataclass
class InnerConfig(Config):
    k: int = setting(96, "neighbours", low=1, high=512)
    scale: float = setting(20.0, "softmax scale", low=0.0)


@dataclass
class OuterConfig(Config):
    name: str = setting("mean", "fusion mode", choices=("mean", "topk"))
    inner: InnerConfig = setting(InnerConfig(), "pooling")
    labels: list[str] = setting(["wall", "floor"], "vocabulary")
    path: str | None = setting(None, "optional checkpoint")


def test_defaults_and_nested_loading():
    config = OuterConfig.from_dict({"inner": {"k": 8, "scale": 5}, "labels": ["chair"]})
    assert config.inner == InnerConfig(k=8, scale=5.0)
    assert isinstance(config.inner.scale, float)
    assert config.labels == ["chair"]
    assert OuterConfig().labels == ["wall", "floor"]
    assert OuterConfig().labels is not OuterConfig().labels


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nme": "mean"}, "unknown OuterConfig keys"),
        ({"inner": {"kk": 1}}, r"inner\.kk"),
        ({"name": "median"}, "not one of"),
        ({"inner": {"k": 0}}, "below its minimum"),
        ({"inner": {"k": 1000}}, "above its maximum"),
        ({"inner": {"k": 2.5}}, "expected an integer"),
        ({"inner": {"scale": "x"}}, "expected a number"),
        ({"inner": 3}, "expected a mapping"),
    ],
)
def test_bad_values_raise_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        OuterConfig.from_dict(data)


def test_yaml_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("scene:\n  name: topk\n  inner:\n    k: 12\n")
    assert OuterConfig.from_yaml(path, "scene").inner.k == 12
    with pytest.raises(ConfigError, match="does not exist"):
        OuterConfig.from_yaml(tmp_path / "missing.yaml")


def test_flat_parameters_round_trip():
    specs = {spec.name: spec for spec in OuterConfig.parameters()}
    assert set(specs) == {"name", "inner.k", "inner.scale", "labels", "path"}
    assert specs["inner.k"].low == 1 and specs["inner.k"].high == 512 and specs["inner.k"].type is int
    assert specs["name"].choices == ("mean", "topk")
    assert specs["inner.scale"].description == "softmax scale"
    rebuilt = OuterConfig.from_flat({"name": "topk", "inner.k": 3, "inner.scale": 1.0, "labels": ["a"]})
    assert rebuilt == OuterConfig(name="topk", inner=InnerConfig(k=3, scale=1.0), labels=["a"])
