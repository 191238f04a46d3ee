"""The core's legend (names, colours, counts) <-> ovseg3d_ros/msg/Legend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from std_msgs.msg import ColorRGBA, Header

from ovseg3d_ros.msg import Legend

if TYPE_CHECKING:  # the core's segmenter imports torch; a conversion must not
    from ovseg3d_core.online import Legend as LegendData


def legend_to_msg(legend: LegendData, header: Header) -> Legend:
    colors = [ColorRGBA(r=float(r), g=float(g), b=float(b), a=1.0) for r, g, b in legend.colors]
    return Legend(header=header, labels=list(legend.labels), colors=colors, point_counts=legend.counts.tolist())
