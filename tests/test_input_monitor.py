"""InputMonitor without DDS: per-input counts between reports, and which inputs went silent."""

from __future__ import annotations

import pytest

from ovseg3d_ros.nodes.input_monitor import InputMonitor, silent_topics

TOPICS = ("rgb/image", "depth/image", "rgb/camera_info", "semantic/image")


def test_counts_arrivals_per_input_since_the_last_report_and_passes_messages_on():
    monitor = InputMonitor(TOPICS)
    received = []
    rgb, depth = monitor.counting(0, received.append), monitor.counting(1)
    for message in ("a", "b", "c"):
        rgb(message)
    depth("d")
    assert received == ["a", "b", "c"]
    assert monitor.take_counts() == {"rgb/image": 3, "depth/image": 1, "rgb/camera_info": 0, "semantic/image": 0}
    rgb("e")
    assert monitor.take_counts() == {"rgb/image": 1, "depth/image": 0, "rgb/camera_info": 0, "semantic/image": 0}
    with pytest.raises(IndexError):
        monitor.counting(len(TOPICS))


def test_silent_inputs_are_those_without_messages_while_others_arrive():
    assert silent_topics({"rgb/image": 5, "depth/image": 5, "semantic/image": 0}) == ["semantic/image"]
    assert silent_topics({"rgb/image": 5, "rgb/camera_info": 0, "semantic/image": 0}) == [
        "rgb/camera_info",
        "semantic/image",
    ]
    assert silent_topics({"rgb/image": 0, "depth/image": 0}) == []  # no stream at all: nothing is singled out
    assert silent_topics({"rgb/image": 1, "depth/image": 2}) == []
