"""ovseg3d-scan: work with labeled scan folders (ScanNet mesh or Pointcept arrays).

``ovseg3d-scan convert SRC DST`` writes the scan in SRC, in either layout, to DST in Pointcept's
layout, so tools that only read that layout can use scans kept as ScanNet ships them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ovseg3d_core.data.scenes.labeled_scan import IGNORE_LABEL, NO_INSTANCE, ScanFormatError
from ovseg3d_core.data.scenes.scan_layouts import convert_to_pointcept, detect_scan_layout

PROG = "ovseg3d-scan"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Work with labeled scan folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="write a scan folder in Pointcept's layout (coord.npy, color.npy, normal.npy, segment20.npy, ...)",
        description="Reads SRC in either layout and writes DST (which must not exist, or be empty) all at once.",
    )
    convert.add_argument("source", type=Path, help="scan folder: ScanNet mesh triple or Pointcept arrays")
    convert.add_argument("destination", type=Path, help="Pointcept scan folder to create")
    convert.add_argument(
        "--label-table",
        type=Path,
        default=None,
        help="scannetv2-labels.combined.tsv for a mesh source (default: the one beside SRC)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        start = time.monotonic()
        layout = detect_scan_layout(args.source)
        print(f"{PROG}: reading {args.source} ({layout.value} layout)", file=sys.stderr)
        scan = convert_to_pointcept(args.source, args.destination, args.label_table)
    except (ScanFormatError, FileNotFoundError, FileExistsError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    labeled = int(np.count_nonzero(scan.segment20 != IGNORE_LABEL))
    instances = len(np.unique(scan.instance[scan.instance != NO_INSTANCE]))
    print(
        f"wrote {args.destination}: {scan.num_points} points, {labeled} with a ScanNet20 label, "
        f"{instances} instances, segment200 {'included' if scan.segment200 is not None else 'absent'} "
        f"({time.monotonic() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
