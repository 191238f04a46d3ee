"""OpenCLIP weight files: which architectures and pretrained tags exist, fetching one, verifying one.

Robots have no internet. Weights are fetched on a machine that has it (``ovseg3d-models fetch``),
copied to the robot, checked there (``ovseg3d-models verify``) and named in
``segmenter.encoders.checkpoint`` (README "Model weights"). Only ``fetch`` goes to the network,
and only after a short reachability check, so an offline machine fails in seconds instead of
waiting out the download clients' retries.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import socket
import sys
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ovseg3d_core.encoders import hub_offline
from ovseg3d_core.encoders.base import EncoderError
from ovseg3d_core.encoders.openclip import (
    OpenCLIPConfig,
    OpenCLIPDenseExtractor,
    load_openclip_model,
    resolve_architecture,
)

CONNECT_TIMEOUT_S = 3.0
HASH_CHUNK = 4 * 2**20
HASH_PROGRESS_MIN_BYTES = 64 * 2**20  # smaller files hash in well under a second
# open_clip swaps in its custom attention block when any of these is set (MaskCLIP needs the standard one).
_CUSTOM_BLOCK_FLAGS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
DENSE_RULE = (
    "'dense' marks architectures the segmentation dense extractor (MaskCLIP features) accepts. It is "
    "decided from the open_clip model config without building the model: the vision tower is "
    "open_clip's own ViT (no timm_model_name, an integer layer count), with no attentional pooler, "
    "the standard attention block (block_type not 'custom'; unset, it turns custom when any of "
    + ", ".join(_CUSTOM_BLOCK_FLAGS)
    + " is set) "
    "and a projection into the text space (embed_dim > 0); the openclip.window_stride setting must be a "
    "multiple of the patch size (noted where the default is not). 'hf-text' marks architectures whose text "
    "tower or tokenizer comes from Hugging Face files, which open_clip looks up on the hub."
)


class FetchError(EncoderError):
    """A pretrained weight file could not be downloaded (no network, unknown name, server error)."""


@dataclass(frozen=True)
class ArchitectureInfo:
    name: str
    dense: bool
    hf_text: bool
    tags: tuple[str, ...]
    patch_size: int | None  # of a ViT vision tower; window_stride must be a multiple of it


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    architecture: str
    sha256: str
    embed_dim: int
    parameters: int
    dense_reason: str | None  # why the dense extractor refuses the model; None = it accepts it


def _model_config(architecture: str) -> dict:
    import open_clip

    return open_clip.get_model_config(resolve_architecture(architecture)) or {}


def dense_compatible(architecture: str) -> bool:
    """Whether the dense extractor accepts ``architecture``, decided from its config (see DENSE_RULE)."""
    config = _model_config(architecture)
    vision = config.get("vision_cfg", {})
    if vision.get("timm_model_name") or not isinstance(vision.get("layers", 12), int) or vision.get("attentional_pool"):
        return False
    custom_flags = any(vision.get(flag) for flag in _CUSTOM_BLOCK_FLAGS)
    block_type = vision.get("block_type") or ("custom" if custom_flags else "default")
    return block_type != "custom" and bool(config.get("embed_dim"))


def hf_text(architecture: str) -> bool:
    """Whether the text tower or tokenizer of ``architecture`` is built from Hugging Face hub files."""
    text = _model_config(architecture).get("text_cfg", {})
    return bool(text.get("hf_model_name") or text.get("hf_tokenizer_name"))


def _patch_size(architecture: str) -> int | None:
    patch = _model_config(architecture).get("vision_cfg", {}).get("patch_size")
    return patch if isinstance(patch, int) else None


def list_architectures() -> list[ArchitectureInfo]:
    """Every architecture the installed open_clip knows, with its pretrained tags."""
    import open_clip

    tags: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        tags.setdefault(name, []).append(tag)
    return [
        ArchitectureInfo(name, dense_compatible(name), hf_text(name), tuple(tags.get(name, ())), _patch_size(name))
        for name in open_clip.list_models()
    ]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, with a progress bar on stderr for large ones (weights are 0.3-4 GB)."""
    path = Path(path)
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        path.open("rb") as handle,
        tqdm(
            total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=size < HASH_PROGRESS_MIN_BYTES
        ) as bar,
    ):
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _pretrained_cfg(architecture: str, tag: str) -> dict:
    """open_clip's download description for ``architecture``/``tag``; unknown names list the valid ones."""
    import open_clip

    if architecture not in open_clip.list_models() or not open_clip.list_pretrained_tags_by_model(architecture):
        known = sorted({name for name, _ in open_clip.list_pretrained()})
        raise FetchError(f"no pretrained weights for architecture {architecture!r}; choose one of: {', '.join(known)}")
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    if tag not in tags:
        raise FetchError(f"{architecture} has no pretrained tag {tag!r}; choose one of: {', '.join(tags)}")
    return open_clip.get_pretrained_cfg(architecture, tag)


def _source_url(cfg: dict) -> str:
    """The address open_clip's ``download_pretrained`` will use (it prefers the Hugging Face hub)."""
    from open_clip.pretrained import has_hf_hub

    if cfg.get("hf_hub") and has_hf_hub():
        import huggingface_hub.constants as hub_constants

        if hub_constants.HF_HUB_OFFLINE:
            raise FetchError(
                "HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set in this environment, so the Hugging Face hub "
                "client will not download; unset it for this command"
            )
        return hub_constants.ENDPOINT
    return cfg.get("url", "")


def architecture_for(architecture: str, tag: str) -> str:
    """The architecture name to load ``tag``'s weights with: its -quickgelu twin when they were trained so.

    The weights load into either (same parameters), but the activation differs and so do the features.
    """
    import open_clip

    twin = f"{architecture}-quickgelu"
    quick = _pretrained_cfg(architecture, tag).get("quick_gelu") and twin in open_clip.list_models()
    return twin if quick else architecture


def preprocessing_mismatch(architecture: str, tag: str) -> str | None:
    """Why images would be normalised differently from how ``tag`` was trained, or None.

    open_clip gives a model built by name with ``pretrained=None`` (how a local file is loaded) its
    default image mean/std, whatever the tag was trained with.
    """
    from open_clip.transform import PreprocessCfg

    cfg = _pretrained_cfg(architecture, tag)
    default = PreprocessCfg()
    for key in ("mean", "std"):
        if key in cfg and tuple(cfg[key]) != tuple(getattr(default, key)):
            used = tuple(getattr(default, key))
            return f"{architecture} {tag} was trained with image {key} {tuple(cfg[key])}; the extractor uses {used}"
    return None


def check_reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to ``url``'s host, or its proxy; raise FetchError within ~2x timeout.

    The connect runs in a daemon thread because name resolution ignores socket timeouts.
    """
    target = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host, port = target.hostname or "", target.port or (443 if target.scheme == "https" else 80)
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=connect, name="ovseg3d-reachability", daemon=True)
    thread.start()
    thread.join(2 * timeout_s)
    if thread.is_alive():
        errors.append(TimeoutError(f"no answer within {2 * timeout_s:.0f} s"))
    if errors:
        raise FetchError(f"no network: cannot reach {host}:{port} ({errors[0]})")


def fetch_pretrained(architecture: str, tag: str, cache_dir: str | Path | None = None) -> Path:
    """Download ``architecture``/``tag`` with open_clip's own downloader into the user cache (or ``cache_dir``)."""
    import open_clip

    cfg = _pretrained_cfg(architecture, tag)
    advice = (
        f"fetch it on a machine with internet (`ovseg3d-models fetch {architecture} {tag}` prints the file's path "
        f"and sha256), copy the file here and check it with `ovseg3d-models verify FILE --arch {architecture}`"
    )
    source = "" if "file" in cfg else _source_url(cfg)
    try:
        if source:
            check_reachable(source)
        path = open_clip.download_pretrained(cfg, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # FetchError (no network), urllib, huggingface_hub and open_clip raise many types
        raise FetchError(f"download of {architecture} {tag} failed: {exc}; {advice}") from exc
    if not path or not Path(path).is_file():
        raise FetchError(f"open_clip returned no file for {architecture} {tag}")
    return Path(path)


def verify_checkpoint(path: str | Path, architecture: str) -> VerifyReport:
    """Load ``path`` as ``architecture`` exactly as segmentation does; raise WeightsNotFoundError if unusable."""
    path = Path(path).expanduser()
    config = OpenCLIPConfig(architecture=architecture)
    try:
        with hub_offline():  # an hf-text architecture fails at once instead of waiting out hub retries
            model = load_openclip_model(config, path)
    except EncoderError:
        raise
    except OSError as exc:  # transformers: the Hugging Face text tower's files are not cached here
        raise EncoderError(f"{architecture} needs Hugging Face files that are not on this machine: {exc}") from exc
    try:
        OpenCLIPDenseExtractor(config, model=model)
        dense_reason = None
    except EncoderError as exc:
        dense_reason = str(exc)
    return VerifyReport(
        path=path.resolve(),
        architecture=resolve_architecture(architecture),
        sha256=file_sha256(path),
        embed_dim=int(model.visual.output_dim),
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        dense_reason=dense_reason,
    )


def _print_list(dense_only: bool) -> None:
    for info in list_architectures():
        if dense_only and not info.dense:
            continue
        marks = " ".join(mark for mark, on in (("dense", info.dense), ("hf-text", info.hf_text)) if on) or "-"
        if info.dense and info.patch_size and OpenCLIPConfig().window_stride % info.patch_size:
            marks += f" (window_stride: a multiple of {info.patch_size})"
        tags = " ".join(info.tags) if info.tags else "(no pretrained tags)"
        print(f"{info.name:<40} {marks:<14} {tags}")


def _print_verify(report: VerifyReport) -> None:
    print(f"file: {report.path}")
    print(f"architecture: {report.architecture}")
    print(f"embedding size: {report.embed_dim}")
    print(f"parameters: {report.parameters}")
    print(f"dense extractor: {'yes' if report.dense_reason is None else 'no (' + report.dense_reason + ')'}")
    print(f"sha256: {report.sha256}")


class _DropRandomInitNotice(logging.Filter):
    """open_clip announces random initialisation before verify loads the file into the model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg3d-models",
        description="List, fetch and verify OpenCLIP weight files for segmenter.encoders.checkpoint.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list", help="architectures open_clip knows and their pretrained tags", description=DENSE_RULE
    )
    listing.add_argument("--dense-only", action="store_true", help="only architectures the dense extractor accepts")
    fetch = commands.add_parser(
        "fetch",
        help="download pretrained weights (needs internet); prints the file's path and sha256",
        description="Download with open_clip's own downloader into its user cache (or --dir). Offline it fails "
        "within seconds: then fetch on a machine with internet and copy the file to this one.",
    )
    fetch.add_argument("arch", help="open_clip architecture, e.g. ViT-B-16 (`ovseg3d-models list`)")
    fetch.add_argument("tag", help="pretrained tag of that architecture, e.g. openai")
    fetch.add_argument("--dir", help="download folder (default: the user cache open_clip uses)")
    verify = commands.add_parser(
        "verify",
        help="load a weight file as segmentation would and report it",
        description="Prints embedding size, parameter count, whether the dense extractor accepts the model, "
        "and the file's sha256; exits non-zero if the file is missing, corrupt or of another architecture.",
    )
    verify.add_argument("file", help="local .pt/.bin/.safetensors weight file")
    verify.add_argument("--arch", required=True, help="open_clip architecture name or model-config .json path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropRandomInitNotice())
    try:
        if args.command == "list":
            _print_list(args.dense_only)
        elif args.command == "fetch":
            path = fetch_pretrained(args.arch, args.tag, args.dir)
            print(f"file: {path}")
            print(f"sha256: {file_sha256(path)}")
            architecture = architecture_for(args.arch, args.tag)
            print(f"architecture: {architecture}  (for --arch and segmenter.encoders.openclip.architecture)")
            if mismatch := preprocessing_mismatch(args.arch, args.tag):
                print(f"warning: {mismatch}", file=sys.stderr)
        else:
            _print_verify(verify_checkpoint(args.file, args.arch))
    except EncoderError as exc:
        print(f"ovseg3d-models: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
