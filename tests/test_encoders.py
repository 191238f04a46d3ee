"""Encoders: MiniLM text (real model), prompts, OpenCLIP dense/text plumbing (random weights), registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ovseg3d_core.config import ConfigError
from ovseg3d_core.data.root import data_path
from ovseg3d_core.data.scenes.image_io import read_color
from ovseg3d_core.encoders import hub_offline
from ovseg3d_core.encoders.base import (
    DenseFeatureExtractor,
    EncoderError,
    FrameFeatureSource,
    TextEncoder,
    WeightsNotFoundError,
)
from ovseg3d_core.encoders.minilm import MiniLMConfig, MiniLMTextEncoder
from ovseg3d_core.encoders.openclip import (
    OpenCLIPConfig,
    OpenCLIPDenseExtractor,
    OpenCLIPTextEncoder,
    load_openclip_model,
    resolve_architecture,
)
from ovseg3d_core.encoders.prompts import PromptConfig, PromptedTextEncoder
from ovseg3d_core.encoders.registry import (
    EncoderConfig,
    build_dense_extractor,
    build_text_encoder,
    load_shared_model,
)

TINY_VIT = "ovseg3d-test-tiny-vit"
TINY_VIT_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


@pytest.fixture(scope="module")
def tiny_architecture(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer ViT config registered with open_clip so most OpenCLIP tests build in milliseconds."""
    import open_clip

    path = tmp_path_factory.mktemp("openclip") / f"{TINY_VIT}.json"
    path.write_text(json.dumps(TINY_VIT_CONFIG))
    open_clip.add_model_config(path)
    return TINY_VIT


@pytest.fixture(scope="module")
def wide_architecture_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a model-config .json like the tiny ViT but with a wider vision tower (another architecture)."""
    config = json.loads(json.dumps(TINY_VIT_CONFIG))
    config["vision_cfg"]["width"] = 96
    path = tmp_path_factory.mktemp("openclip-wide") / "ovseg3d-test-wide-vit.json"
    path.write_text(json.dumps(config))
    return str(path)


def tiny_config(architecture: str, **changes: object) -> OpenCLIPConfig:
    values = {"architecture": architecture, "allow_random_weights": True, "short_side": 64, "window_stride": 64}
    return OpenCLIPConfig(**{**values, **changes})


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- MiniLM -----------------------------------------------------------------------------------


def test_minilm_shapes_norms_and_protocol(minilm: MiniLMTextEncoder) -> None:
    vectors = minilm.encode(["a wooden chair", "a chair made of wood", "a red car"])
    assert isinstance(minilm, TextEncoder)
    assert minilm.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.8 > 0.4 > vectors[0] @ vectors[2]
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_matches_sentence_transformers(minilm: MiniLMTextEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = ["a sofa in a scene", "there is a toilet next to the sink", "x"]
    reference = SentenceTransformer(str(minilm.model_dir), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(texts), reference, atol=1e-5)


def test_minilm_semantics_sofa_couch(minilm: MiniLMTextEncoder) -> None:
    sofa, couch, toilet = minilm.encode(["sofa", "couch", "toilet"])
    assert sofa @ couch > sofa @ toilet + 0.2


def test_minilm_cache_reuses_and_evicts() -> None:
    encoder = MiniLMTextEncoder(MiniLMConfig(cache_size=2))
    first = encoder.encode(["chair", "table"])
    again = encoder.encode(["table", "chair"])
    assert encoder.cache_misses == 2 and encoder.cache_hits == 2
    np.testing.assert_array_equal(again, first[::-1])
    again[:] = 0.0  # callers get copies; the cache stays intact
    np.testing.assert_array_equal(encoder.encode(["chair"]), first[:1])
    encoder.encode(["lamp"])  # evicts the least recently used ("table")
    misses = encoder.cache_misses
    encoder.encode(["table"])
    assert encoder.cache_misses == misses + 1


def test_minilm_rejects_bad_text_and_missing_model(minilm: MiniLMTextEncoder, tmp_path) -> None:
    with pytest.raises(EncoderError, match="single string"):
        minilm.encode("chair")
    with pytest.raises(EncoderError, match="non-empty"):
        minilm.encode(["chair", "  "])
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path)):
        MiniLMTextEncoder(MiniLMConfig(model_dir=str(tmp_path)))


def test_prompts_single_and_ensemble(minilm: MiniLMTextEncoder) -> None:
    single = PromptedTextEncoder(minilm)
    np.testing.assert_allclose(single.encode(["sofa"]), minilm.encode(["a sofa in a scene"]), atol=1e-6)
    ensemble = PromptedTextEncoder(minilm, PromptConfig(ensemble=True))
    vectors = ensemble.encode(["sofa", "toilet"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = minilm.encode([t.format("sofa") for t in ensemble.config.ensemble_templates])
    expected = raw.mean(axis=0) / np.linalg.norm(raw.mean(axis=0))
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="exactly one"):
        PromptConfig(template="a scene")


NO_GLOBAL_STATE_PROBE = """
import json, os, socket, sys, tempfile

import numpy as np

attempts = []


def refuse(*args, **kwargs):
    attempts.append(repr(args))
    raise OSError("network access attempted")


def changes(before):
    after = dict(os.environ)
    return {name: (before.get(name), after.get(name)) for name in before.keys() | after.keys()
            if before.get(name) != after.get(name)}


socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
start = dict(os.environ)
import ovseg3d_core.encoders
import ovseg3d_core.encoders.minilm
import ovseg3d_core.encoders.model_files
import ovseg3d_core.encoders.openclip
import ovseg3d_core.encoders.registry

assert not changes(start), changes(start)
# Third-party libraries set variables of their own when imported (open_clip: TOKENIZERS_PARALLELISM,
# torch._dynamo via transformers: TORCHINDUCTOR_CACHE_DIR); import them first so what follows
# measures this package only.
import huggingface_hub.constants
import open_clip
import torch._dynamo
from transformers import AutoModel, AutoTokenizer

baseline = dict(os.environ)
assert huggingface_hub.constants.HF_HUB_OFFLINE is False
from ovseg3d_core.encoders.openclip import OpenCLIPConfig, OpenCLIPDenseExtractor, OpenCLIPTextEncoder
from ovseg3d_core.encoders.openclip import load_openclip_model
from ovseg3d_core.encoders.registry import EncoderConfig, build_text_encoder

vectors = build_text_encoder(EncoderConfig(dense="noisy_oracle")).encode(["a wooden chair"])
assert vectors.shape == (1, 384), vectors.shape
path = os.path.join(tempfile.mkdtemp(), "ovseg3d-probe-tiny-vit.json")
with open(path, "w") as handle:
    json.dump(json.loads(sys.argv[1]), handle)
config = OpenCLIPConfig(architecture=path, allow_random_weights=True, short_side=64, window_stride=64)
model = load_openclip_model(config)
features = OpenCLIPDenseExtractor(config, model).extract(np.zeros((64, 64, 3), np.uint8))
texts = OpenCLIPTextEncoder(config, model).encode(["a chair"])
assert features.shape == (4, 4, 32) and texts.shape == (1, 32), (features.shape, texts.shape)
assert not changes(baseline), changes(baseline)
assert huggingface_hub.constants.HF_HUB_OFFLINE is False
assert not attempts, attempts
print("probe passed")
"""


def test_package_leaves_process_state_alone() -> None:
    """Import, the default MiniLM encoder and an OpenCLIP model change no environment variable or hub flag
    and open no connection, with the Hugging Face offline variables unset."""
    env = {name: value for name, value in os.environ.items() if name not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = subprocess.run(
        [sys.executable, "-c", NO_GLOBAL_STATE_PROBE, json.dumps(TINY_VIT_CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probe passed" in result.stdout


def test_hub_offline_is_scoped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the block a hub look-up fails at once without a connection; outside, every setting is as before."""
    import huggingface_hub.constants
    import open_clip

    attempts = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    before = dict(os.environ)
    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
        started = time.monotonic()
        with pytest.raises(OSError, match=r"huggingface|cached"):
            open_clip.get_tokenizer("ViT-L-14-CLIPA")  # its tokenizer comes from the hub (bert-base-uncased)
        assert time.monotonic() - started < 5
    assert dict(os.environ) == before and huggingface_hub.constants.HF_HUB_OFFLINE is False
    assert not attempts, attempts
    with pytest.raises(RuntimeError, match="inside"), hub_offline():
        raise RuntimeError("inside")
    assert dict(os.environ) == before and huggingface_hub.constants.HF_HUB_OFFLINE is False


# --- OpenCLIP (random weights: plumbing only, never a VLM result) -------------------------------


def test_openclip_default_config_is_local_only(tmp_path) -> None:
    import open_clip

    config = OpenCLIPConfig()
    assert EncoderConfig().checkpoint == "" and not config.allow_random_weights
    assert "checkpoint" not in config.to_dict()  # the one checkpoint setting is EncoderConfig.checkpoint
    assert config.architecture in open_clip.list_models() and ":" not in config.architecture
    with pytest.raises(WeightsNotFoundError, match="checkpoint"):
        load_openclip_model(config)
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        load_openclip_model(config, missing)
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        OpenCLIPDenseExtractor(config, checkpoint=str(missing))
    with pytest.raises(WeightsNotFoundError, match=str(missing)):
        OpenCLIPTextEncoder(config, checkpoint=str(missing))
    with pytest.raises(EncoderError, match="unknown open_clip architecture"):
        load_openclip_model(config.replace(architecture="hf-hub:someone/model"))


def test_openclip_wrong_checkpoint_file_names_path(tiny_architecture: str, tmp_path) -> None:
    garbage = tmp_path / "broken.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match=str(garbage)):
        load_openclip_model(tiny_config(tiny_architecture, allow_random_weights=False), str(garbage))


def test_openclip_checkpoint_of_another_architecture_is_rejected(
    tiny_architecture: str, wide_architecture_json: str, tmp_path
) -> None:
    """Weights saved from the tiny ViT do not load into a wider ViT: the error names the file and the mismatch."""
    checkpoint = tmp_path / "tiny.pt"
    torch.save(load_openclip_model(tiny_config(tiny_architecture)).state_dict(), checkpoint)
    wide = tiny_config(wide_architecture_json, allow_random_weights=False)
    with pytest.raises(WeightsNotFoundError, match=rf"{checkpoint} is not usable for .*wide-vit.json: .*state_dict"):
        load_openclip_model(wide, checkpoint)
    with pytest.raises(WeightsNotFoundError, match=str(checkpoint)):
        OpenCLIPDenseExtractor(wide, checkpoint=checkpoint)
    assert load_openclip_model(tiny_config(tiny_architecture, allow_random_weights=False), checkpoint) is not None


def test_resolve_architecture_accepts_model_config_json(wide_architecture_json: str, tmp_path) -> None:
    import open_clip

    name = resolve_architecture(wide_architecture_json)
    assert name == "ovseg3d-test-wide-vit" and name in open_clip.list_models()
    assert open_clip.get_model_config(name)["vision_cfg"]["width"] == 96
    assert resolve_architecture(name) == name
    missing = tmp_path / "absent.json"
    with pytest.raises(EncoderError, match=rf"{missing} does not exist"):
        resolve_architecture(str(missing))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{ not json")
    with pytest.raises(EncoderError, match=rf"{garbage} is not usable"):
        resolve_architecture(str(garbage))
    no_model = tmp_path / "no-model.json"
    no_model.write_text(json.dumps({"embed_dim": 32}))
    with pytest.raises(EncoderError, match="unknown open_clip architecture 'no-model'"):
        resolve_architecture(str(no_model))
    # a rejected file leaves open_clip's registry usable for the next config
    other = tmp_path / "ovseg3d-test-after-garbage.json"
    other.write_text(json.dumps(TINY_VIT_CONFIG))
    assert resolve_architecture(str(other)) == "ovseg3d-test-after-garbage"


def test_openclip_dense_shapes_dtype_and_upsampling(tiny_architecture: str) -> None:
    extractor = OpenCLIPDenseExtractor(tiny_config(tiny_architecture))
    assert isinstance(extractor, DenseFeatureExtractor) and isinstance(extractor, FrameFeatureSource)
    image = random_image(48, 80)
    features = extractor.extract(image)
    # short side 48 -> 64 px; long side 80 * 64/48 = 106.7 -> 112 px (patch grid) -> 4 x 7 patches
    assert extractor.resized_shape(48, 80) == (64, 112)
    assert features.shape == (4, 7, 32) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=-1), 1.0, atol=1e-5)
    upsampled = extractor.extract(image, output_size=(48, 80))
    assert upsampled.shape == (48, 80, 32) and upsampled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(upsampled, axis=-1), 1.0, atol=1e-5)
    with pytest.raises(EncoderError, match="uint8"):
        extractor.extract(image.astype(np.float32))
    with pytest.raises(EncoderError, match="HxWx3"):
        extractor.extract(image[..., 0])


def test_openclip_batching_matches_single_images(tiny_architecture: str) -> None:
    config = tiny_config(tiny_architecture, window_stride=32, batch_size=1)
    model = load_openclip_model(config)
    one_by_one = OpenCLIPDenseExtractor(config, model)
    batched = OpenCLIPDenseExtractor(config.replace(batch_size=16), model)
    images = [random_image(64, 100, seed) for seed in range(3)]
    together = batched.extract_many(images)
    for image, features in zip(images, together, strict=True):
        np.testing.assert_allclose(features, one_by_one.extract(image), atol=1e-5)


def test_openclip_random_init_is_deterministic_per_seed(tiny_architecture: str) -> None:
    image = random_image(64, 64)
    first = OpenCLIPDenseExtractor(tiny_config(tiny_architecture, random_seed=3)).extract(image)
    second = OpenCLIPDenseExtractor(tiny_config(tiny_architecture, random_seed=3)).extract(image)
    other = OpenCLIPDenseExtractor(tiny_config(tiny_architecture, random_seed=4)).extract(image)
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other).max() > 1e-3


def test_openclip_dense_features_stay_in_their_half(tiny_architecture: str) -> None:
    """With one window per half, left-half features depend only on left-half pixels (and vice versa)."""
    extractor = OpenCLIPDenseExtractor(tiny_config(tiny_architecture))
    left, right, other_right = random_image(64, 64, 1), random_image(64, 64, 2), random_image(64, 64, 3)
    base = extractor.extract(np.concatenate([left, right], axis=1))
    changed = extractor.extract(np.concatenate([left, other_right], axis=1))
    swapped = extractor.extract(np.concatenate([right, left], axis=1))
    assert base.shape[:2] == (4, 8)
    np.testing.assert_allclose(changed[:, :4], base[:, :4], atol=1e-6)
    assert np.abs(changed[:, 4:] - base[:, 4:]).max() > 1e-2
    np.testing.assert_allclose(swapped[:, :4], base[:, 4:], atol=1e-5)
    np.testing.assert_allclose(swapped[:, 4:], base[:, :4], atol=1e-5)


def test_openclip_features_follow_the_maskclip_value_path(tiny_architecture: str) -> None:
    """Patch features equal ln_post(out_proj(v)) @ proj of the last block, computed independently here."""
    import open_clip

    config = tiny_config(tiny_architecture, normalize=False)
    extractor = OpenCLIPDenseExtractor(config)
    visual = extractor.model.visual
    image = random_image(64, 64)
    features = extractor.extract(image)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    preprocess = open_clip.get_model_preprocess_cfg(extractor.model)
    mean = torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, 3, 1, 1)
    captured = {}
    last = visual.transformer.resblocks[-1]
    hook = last.register_forward_pre_hook(lambda _module, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        visual((tensor - mean) / std)
        hook.remove()
        x = last.ln_1(captured["x"])
        _, _, v = torch.nn.functional.linear(x, last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)
        expected = visual.ln_post(last.attn.out_proj(v)[:, 1:]) @ visual.proj
    np.testing.assert_allclose(features.reshape(-1, 32), expected[0].numpy(), atol=1e-5)


def test_openclip_weights_round_trip(tiny_architecture: str, tmp_path) -> None:
    source_config = tiny_config(tiny_architecture, random_seed=11)
    model = load_openclip_model(source_config)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    loaded_config = tiny_config(tiny_architecture, random_seed=99, allow_random_weights=False)
    image = random_image(64, 96)
    np.testing.assert_array_equal(
        OpenCLIPDenseExtractor(loaded_config, checkpoint=str(checkpoint)).extract(image),
        OpenCLIPDenseExtractor(source_config, model).extract(image),
    )
    texts = ["a chair", "a sofa in a scene"]
    np.testing.assert_array_equal(
        OpenCLIPTextEncoder(loaded_config, checkpoint=checkpoint).encode(texts),
        OpenCLIPTextEncoder(source_config, model).encode(texts),
    )


def test_openclip_text_encoder_with_prompts(tiny_architecture: str) -> None:
    encoder = OpenCLIPTextEncoder(tiny_config(tiny_architecture))
    vectors = encoder.encode(["chair", "table", "chair"])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    prompted = PromptedTextEncoder(encoder).encode(["chair"])
    np.testing.assert_allclose(prompted, encoder.encode(["a chair in a scene"]), atol=1e-6)


def test_openclip_vit_b16_on_a_real_frame() -> None:
    """The default architecture (ViT-B-16, random weights) on a 640x480 7-Scenes frame."""
    image = read_color(data_path("7scenes", "frame-000000.color.jpg"))
    extractor = OpenCLIPDenseExtractor(OpenCLIPConfig(allow_random_weights=True, short_side=224))
    features = extractor.extract(image)
    assert image.shape == (480, 640, 3)
    assert features.shape == (14, 19, 512) and features.dtype == np.float32
    assert extractor.grid_shape(480, 640) == (14, 19)
    assert np.isfinite(features).all()
    assert features.std(axis=(0, 1)).mean() > 1e-3  # patches differ: the output depends on the input


# --- registry -----------------------------------------------------------------------------------


def test_registry_builds_by_name(minilm: MiniLMTextEncoder) -> None:
    config = EncoderConfig.from_dict(
        {
            "dense": "noisy_oracle",
            "prompts": {"template": "a photo of a {}"},
            "noisy_oracle": {"seed": 5, "class_names": ["sofa", "wall"]},
        }
    )
    assert config.text_backend == "minilm" and load_shared_model(config) is None
    text = build_text_encoder(config)
    assert isinstance(text, PromptedTextEncoder) and isinstance(text.encoder, MiniLMTextEncoder)
    np.testing.assert_allclose(text.encode(["sofa"]), minilm.encode(["a photo of a sofa"]), atol=1e-6)
    oracle = build_dense_extractor(config, text_encoder=text)
    assert isinstance(oracle, FrameFeatureSource) and oracle.dim == 384 and oracle.config.seed == 5
    assert list(oracle.class_names) == ["sofa", "wall"]
    no_names = config.replace(noisy_oracle=config.noisy_oracle.replace(class_names=[]))
    with pytest.raises(EncoderError, match="class name"):
        build_dense_extractor(no_names, text_encoder=text)
    with pytest.raises(ConfigError, match="class_names"):
        EncoderConfig.from_dict({"dense": "noisy_oracle", "noisy_oracle": {"class_names": "sofa"}})
    with pytest.raises(ConfigError, match="text space"):
        EncoderConfig(dense="openclip", text="minilm")
    with pytest.raises(ConfigError, match="not one of"):
        EncoderConfig(text="bert")
    assert EncoderConfig().text_backend == "openclip"
    assert EncoderConfig(dense="noisy_oracle").text_backend == "minilm"
    assert EncoderConfig(dense="noisy_oracle", text="openclip").text_backend == "openclip"


def test_registry_shares_the_openclip_model(tiny_architecture: str) -> None:
    config = EncoderConfig(dense="openclip", openclip=tiny_config(tiny_architecture))
    model = load_shared_model(config)
    text = build_text_encoder(config, model=model)
    dense = build_dense_extractor(config, text_encoder=text, model=model)
    assert isinstance(text.encoder, OpenCLIPTextEncoder) and isinstance(dense, OpenCLIPDenseExtractor)
    assert dense.model is text.encoder.model is model
    assert dense.dim == text.dim == 32


def test_registry_loads_the_configured_checkpoint(tiny_architecture: str, tmp_path) -> None:
    """EncoderConfig.checkpoint is where both towers' weights come from; a missing file is named."""
    source = load_openclip_model(tiny_config(tiny_architecture, random_seed=21))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), checkpoint)
    openclip = tiny_config(tiny_architecture, random_seed=5, allow_random_weights=False)
    config = EncoderConfig(openclip=openclip, checkpoint=str(checkpoint))
    model = load_shared_model(config)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)
    image = random_image(64, 64)
    np.testing.assert_array_equal(
        build_dense_extractor(config).extract(image), OpenCLIPDenseExtractor(openclip, source).extract(image)
    )
    missing = config.replace(checkpoint=str(tmp_path / "absent.pt"))
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "absent.pt")):
        load_shared_model(missing)
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "absent.pt")):
        build_text_encoder(missing)
