"""`ovseg3d-models` (list, fetch, verify OpenCLIP weight files), run as the installed console script.

This machine has no network, which is what a robot sees: fetch must fail fast and say what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ovseg3d_core.encoders import model_files
from ovseg3d_core.encoders.base import EncoderError
from ovseg3d_core.encoders.model_files import FetchError, check_reachable, dense_compatible, fetch_pretrained
from ovseg3d_core.encoders.openclip import (
    OpenCLIPConfig,
    OpenCLIPDenseExtractor,
    load_openclip_model,
    resolve_architecture,
)

SCRIPT = Path(sys.executable).parent / "ovseg3d-models"
TINY_VIT_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it, with the Hugging Face offline switches unset (the real default)."""
    env = {name: value for name, value in os.environ.items() if name not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def write_architecture(folder: Path, name: str, **vision_changes: object) -> Path:
    """A tiny ViT model-config .json (optionally altered), the form a custom architecture ships in."""
    config = json.loads(json.dumps(TINY_VIT_CONFIG))
    config["vision_cfg"].update(vision_changes)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(architecture .json, random-weight checkpoint file, parameter count) of the tiny ViT."""
    folder = tmp_path_factory.mktemp("model-files")
    architecture = write_architecture(folder, "ovseg3d-test-files-vit")
    model = load_openclip_model(OpenCLIPConfig(architecture=str(architecture), allow_random_weights=True))
    checkpoint = folder / "tiny-vit.pt"
    torch.save(model.state_dict(), checkpoint)
    return architecture, checkpoint, sum(parameter.numel() for parameter in model.parameters())


def test_list_shows_architectures_tags_and_dense_support() -> None:
    result = run_script("list")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    assert lines["ViT-B-16"][0] == "dense"
    assert {"openai", "laion2b_s34b_b88k", "datacomp_xl_s13b_b90k"} <= set(lines["ViT-B-16"])
    assert lines["RN50"][0] == "-" and "openai" in lines["RN50"]  # a ResNet: no patch tokens for MaskCLIP
    assert lines["coca_ViT-B-32"][0] == "-"  # attentional pooler
    assert lines["ViT-L-14-CLIPA"][:2] == ["dense", "hf-text"]
    dense_only = run_script("list", "--dense-only")
    assert dense_only.returncode == 0 and "ViT-B-16 " in dense_only.stdout and "RN50 " not in dense_only.stdout
    assert "decided from the open_clip model config without building the model" in " ".join(
        run_script("list", "--help").stdout.split()
    )


def test_dense_mark_agrees_with_the_extractor(tmp_path: Path) -> None:
    """The config-only rule gives the extractor's own verdict (models built on the meta device, no memory)."""
    import open_clip

    tiny = write_architecture(tmp_path, "ovseg3d-test-rule-plain")
    pooled = write_architecture(tmp_path, "ovseg3d-test-rule-pooled", attentional_pool=True)
    custom = write_architecture(tmp_path, "ovseg3d-test-rule-custom", scale_attn=True)
    verdicts = {}
    for architecture in ("ViT-B-16", "ViT-M-16-alt", "RN50", "coca_ViT-B-32", "convnext_base", tiny, pooled, custom):
        config = OpenCLIPConfig(architecture=str(architecture))
        model = open_clip.create_model(resolve_architecture(str(architecture)), device="meta")
        try:
            OpenCLIPDenseExtractor(config, model=model)
            accepted = True
        except EncoderError:
            accepted = False
        verdicts[Path(str(architecture)).stem] = accepted
        assert dense_compatible(str(architecture)) == accepted, architecture
    assert [name for name, accepted in verdicts.items() if accepted] == [
        "ViT-B-16",
        "ViT-M-16-alt",
        "ovseg3d-test-rule-plain",
    ]


def test_verify_reports_embedding_size_parameters_and_sha256(tiny_checkpoint: tuple[Path, Path, int]) -> None:
    architecture, checkpoint, parameters = tiny_checkpoint
    result = run_script("verify", str(checkpoint), "--arch", str(architecture))
    assert result.returncode == 0, result.stderr[-2000:]
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert report["embedding size"] == "32"
    assert report["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert report["parameters"] == str(parameters)
    assert report["dense extractor"] == "yes"
    assert report["architecture"] == "ovseg3d-test-files-vit" and report["file"] == str(checkpoint.resolve())
    assert "No pretrained weights loaded" not in result.stderr  # the random-init notice before loading is noise


def test_verify_rejects_missing_corrupt_and_mismatched_files(
    tiny_checkpoint: tuple[Path, Path, int], tmp_path: Path
) -> None:
    architecture, checkpoint, _ = tiny_checkpoint
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    wide = write_architecture(tmp_path, "ovseg3d-test-files-wide", width=96)
    missing = tmp_path / "absent.pt"
    cases = {
        (garbage, architecture): rf"checkpoint {garbage} is not usable",
        (checkpoint, wide): rf"checkpoint {checkpoint} is not usable for {wide}: .*state_dict",
        (missing, architecture): rf"checkpoint {missing} does not exist",
        (checkpoint, tmp_path / "absent.json"): r"absent.json does not exist",
    }
    for (file, arch), reason in cases.items():
        result = run_script("verify", str(file), "--arch", str(arch))
        assert result.returncode != 0, (file, arch)
        assert re.search(reason, result.stderr), result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "sha256" not in result.stdout


def test_fetch_offline_fails_fast_and_says_what_to_do() -> None:
    started = time.monotonic()
    result = run_script("fetch", "ViT-B-16", "openai", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 30, elapsed
    assert "download of ViT-B-16 openai failed: no network" in result.stderr
    assert "machine with internet" in result.stderr and "copy the file here" in result.stderr
    assert "verify FILE --arch ViT-B-16" in result.stderr and "Traceback" not in result.stderr


def test_fetch_unknown_architecture_or_tag_lists_the_choices() -> None:
    tag = run_script("fetch", "ViT-B-16", "no-such-tag")
    assert tag.returncode != 0
    assert "no pretrained tag 'no-such-tag'" in tag.stderr and "openai, laion400m_e31" in tag.stderr
    architecture = run_script("fetch", "ViT-Q-99", "openai")
    assert architecture.returncode != 0
    assert "no pretrained weights for architecture 'ViT-Q-99'" in architecture.stderr
    assert "ViT-B-16, " in architecture.stderr and "RN50, " in architecture.stderr


def refuse_sockets(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    attempts: list[tuple] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access refused by the test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_fetch_tries_one_connection_and_no_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, the reachability check is the only connection attempt: the hub client's retries never start."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    attempts = refuse_sockets(monkeypatch)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"no network: cannot reach huggingface\.co:443"):
        fetch_pretrained("ViT-B-16", "openai", cache_dir=tmp_path)
    assert time.monotonic() - started < 10
    assert attempts == [(("huggingface.co", 443),)]
    assert not any(tmp_path.iterdir())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FetchError, match="HF_HUB_OFFLINE"):
        fetch_pretrained("ViT-B-16", "openai", cache_dir=tmp_path)
    assert len(attempts) == 1


def test_reachability_check_goes_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    attempts = refuse_sockets(monkeypatch)
    with pytest.raises(FetchError, match=r"proxy\.example\.invalid:3128"):
        check_reachable("https://huggingface.co")
    assert attempts == [(("proxy.example.invalid", 3128),)]


def test_sha256_shows_progress_for_large_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = os.urandom(3 * model_files.HASH_CHUNK + 5)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    assert model_files.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert "sha256 weights.bin" not in capsys.readouterr().err  # below the threshold: quiet
    monkeypatch.setattr(model_files, "HASH_PROGRESS_MIN_BYTES", 0)
    assert model_files.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert "sha256 weights.bin" in capsys.readouterr().err


def test_fetch_names_the_architecture_the_weights_need() -> None:
    """OpenAI weights were trained with QuickGELU; a tag's own image statistics differ from the default for some."""
    import open_clip

    assert model_files.architecture_for("ViT-B-16", "openai") == "ViT-B-16-quickgelu"
    assert open_clip.get_model_config("ViT-B-16-quickgelu")["quick_gelu"] is True
    assert model_files.architecture_for("ViT-B-16", "laion2b_s34b_b88k") == "ViT-B-16"
    assert model_files.preprocessing_mismatch("ViT-B-16", "openai") is None
    assert "mean (0.5, 0.5, 0.5)" in model_files.preprocessing_mismatch("ViT-L-14", "laion2b_s32b_b82k")
    with pytest.raises(FetchError, match="no pretrained tag"):
        model_files.architecture_for("ViT-B-16", "no-such-tag")
