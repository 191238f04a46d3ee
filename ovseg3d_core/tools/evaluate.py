"""ovseg3d-eval: segmentation quality on labelled scan folders, as JSON, Markdown and PNG panels.

    ovseg3d-eval SCAN [SCAN ...] [--noise default] [--seeds 5] [--purification student_geometric geometric]
                 [--views 80] [--backend noisy_oracle | openclip --checkpoint FILE] [--out DIR] [--quick]

A scan folder holds ScanNet's mesh triple or Pointcept's arrays. Every printed line and every
report names the 2D source; with the noisy oracle (a benchmark instrument), also its preset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ovseg3d_core.atomic_file import atomic_write_text
from ovseg3d_core.config import ConfigError
from ovseg3d_core.data.scenes.labeled_scan import LabeledScan, ScanFormatError
from ovseg3d_core.data.scenes.scan_layouts import load_scan
from ovseg3d_core.data.scenes.scannet import SCANNET20_CLASSES
from ovseg3d_core.encoders.noisy_oracle import ERROR_MIXES, NOISE_PRESETS
from ovseg3d_core.encoders.registry import DENSE_EXTRACTORS
from ovseg3d_core.evaluation import (
    MEAN_FUSION,
    EvaluationConfig,
    EvaluationResult,
    ScanOutcome,
    evaluate_scans,
    summarise,
)
from ovseg3d_core.segmenter import PURIFICATION_MODES
from ovseg3d_core.viz.cloud_render import render_label_panels

PROG = "ovseg3d-eval"
QUICK = {"seeds": 1, "views": 24, "topk": False}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("scans", nargs="+", type=Path, help="scan folders (ScanNet mesh triple or Pointcept arrays)")
    parser.add_argument(
        "--backend", choices=DENSE_EXTRACTORS, default="noisy_oracle", help="2D source (default: noisy oracle)"
    )
    parser.add_argument("--checkpoint", default="", help="OpenCLIP weights file for --backend openclip")
    parser.add_argument("--noise", choices=tuple(NOISE_PRESETS), default="default", help="noisy-oracle preset")
    parser.add_argument(
        "--severity", type=float, default=None, help="noisy-oracle severity in [0, 1] on --error-mix, replacing --noise"
    )
    parser.add_argument("--error-mix", choices=tuple(ERROR_MIXES), default="mixed", help="error mix --severity scales")
    parser.add_argument("--seeds", type=int, default=5, help="noisy-oracle seeds (default 5)")
    parser.add_argument(
        "--purification",
        nargs="+",
        choices=[m for m in PURIFICATION_MODES if m != "none"],
        default=["student_geometric", "geometric"],
        help="purification modes scored beside raw fusion",
    )
    parser.add_argument("--views", type=int, default=80, help="rendered views per scan (default 80)")
    parser.add_argument("--no-topk", action="store_true", help="skip the top-k agreement fusion row")
    parser.add_argument("--out", type=Path, default=Path("eval_output"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="the first scan, one seed, 24 views (under a minute)")
    return parser


def config_from_args(args: argparse.Namespace) -> EvaluationConfig:
    values = {
        "backend": args.backend,
        "checkpoint": args.checkpoint,
        "noise": args.noise,
        "severity": args.severity,
        "error_mix": args.error_mix,
        "seeds": args.seeds,
        "views": args.views,
        "purifications": list(args.purification),
        "topk": not args.no_topk,
    }
    if args.quick:
        values.update(QUICK)
    return EvaluationConfig.from_dict(values)


def write_reports(result: EvaluationResult, scans: Sequence[LabeledScan], out: Path) -> list[Path]:
    """eval.json, eval.md and one PNG panel per scan (ground truth / raw fusion / purified, first seed)."""
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_dict()
    data["summary"] = summarise(result.rows)
    written = [atomic_write_text(out / "eval.json", json.dumps(data, indent=2))]
    written.append(atomic_write_text(out / "eval.md", markdown(result, data["summary"])))
    for scan, outcome in zip(scans, result.scans, strict=True):
        written.append(write_panel(result, scan, outcome, out / f"{scan.name}.png"))
    return written


def write_panel(result: EvaluationResult, scan: LabeledScan, outcome: ScanOutcome, path: Path) -> Path:
    """Ground truth / raw fusion / each purification mode of one scan at the first seed, as a PNG."""

    seed = result.config.run_seeds()[0]
    panels = [("ground truth (ScanNet20)", scan.segment20)]
    panels.append(("raw multi-view fusion", outcome.predictions[(MEAN_FUSION, seed)]))
    panels += [(f"purified ({mode})", outcome.predictions[(mode, seed)]) for mode in result.config.purifications]
    return render_label_panels(
        path, scan.points, panels, SCANNET20_CLASSES, title=f"{scan.name}: {result.config.describe()}, seed {seed}"
    )


def markdown(result: EvaluationResult, summary: dict) -> str:
    config = result.config
    lines = [
        "# Segmentation evaluation",
        "",
        f"2D source: {config.describe()}. Scans: {', '.join(s.name for s in result.scans)}; {config.views} views "
        f"each; seeds {config.run_seeds()}.",
        "",
        "Every labelled point of each scan is scored; a point the map never observed counts as a miss. "
        "A scan's mIoU follows ScanNet's official script (every class with a non-zero union counts); "
        "`pooled` sums the confusion over scans and averages over all 20 classes (mIoU19: the 19 GeoPurify "
        "reports, without otherfurniture).",
        "",
        "| method | pooled mIoU (mean ± std over seeds) | gain over mean fusion, paired per seed | mIoU19 | mAcc |",
        "|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        gain = "" if method == MEAN_FUSION else f"{100 * s['gain_mean']:+.1f} ± {100 * s['gain_std']:.1f}"
        lines.append(
            f"| {method} | {100 * s['miou_mean']:.1f} ± {100 * s['miou_std']:.1f} | {gain} | "
            f"{100 * s['miou19_mean']:.1f} | {100 * s['macc_mean']:.1f} |"
        )
    lines += ["", "Coverage (labelled points seen by the views): "]
    lines[-1] += ", ".join(f"{s.name} {100 * s.coverage:.0f}%" for s in result.scans)
    lines += ["", *[f"**Warning:** {w}" for w in result.warnings]]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        folders = args.scans[:1] if args.quick else args.scans
        source = f"[{config.describe()}]"
        start = time.monotonic()
        scans = []
        for folder in folders:
            scans.append(load_scan(folder))
            print(f"{source} loaded {scans[-1].name} ({scans[-1].num_points} points) from {folder}", file=sys.stderr)
        result = evaluate_scans(scans, config)
        written = write_reports(result, scans, args.out)
    except (ConfigError, ScanFormatError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    for method, s in summarise(result.rows).items():
        print(f"{source} pooled {method}: mIoU {100 * s['miou_mean']:.1f} ± {100 * s['miou_std']:.1f}")
    print(f"{source} wrote {', '.join(str(p) for p in written)} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
