"""QoS profiles and the shipped Fast DDS profile: 300k-point clouds cross processes without loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

from ovseg3d_ros.fastdds_profile import (
    LEGACY_PROFILE_ENV,
    PROFILE_ENV,
    fastdds_profile_path,
    profile_variable,
    use_fastdds_profile,
)
from ovseg3d_ros.nodes.qos import cloud_output_qos, latched_qos, sensor_input_qos

PEER = Path(__file__).with_name("cloud_peer.py")
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_qos_profiles_match_the_design():
    sensor = sensor_input_qos()
    assert (sensor.reliability, sensor.history, sensor.durability) == (
        ReliabilityPolicy.BEST_EFFORT,
        HistoryPolicy.KEEP_LAST,
        DurabilityPolicy.VOLATILE,
    )
    cloud = cloud_output_qos()
    assert (cloud.reliability, cloud.history) == (ReliabilityPolicy.RELIABLE, HistoryPolicy.KEEP_LAST)
    legend = latched_qos()
    assert (legend.reliability, legend.durability, legend.depth) == (
        ReliabilityPolicy.RELIABLE,
        DurabilityPolicy.TRANSIENT_LOCAL,
        1,
    )


def test_profile_file_declares_a_64_mb_shared_memory_transport():
    root = ElementTree.parse(fastdds_profile_path()).getroot()
    ns = {"dds": "http://www.eprosima.com"}
    shm = [
        d for d in root.iterfind(".//dds:transport_descriptor", ns) if d.findtext("dds:type", namespaces=ns) == "SHM"
    ]
    assert len(shm) == 1 and int(shm[0].findtext("dds:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", ns)]
    assert shm[0].findtext("dds:transport_id", namespaces=ns) in used


def test_use_fastdds_profile_respects_the_users_choice():
    environ = {"ROS_DISTRO": "kilted"}
    assert use_fastdds_profile(environ) == fastdds_profile_path() and environ[PROFILE_ENV].endswith(".xml")
    assert LEGACY_PROFILE_ENV not in environ  # Fast DDS 3 warns on every participant when it is set
    mine = {PROFILE_ENV: "/etc/my_profile.xml", "ROS_DISTRO": "kilted"}
    assert use_fastdds_profile(mine) == Path("/etc/my_profile.xml") and mine[PROFILE_ENV] == "/etc/my_profile.xml"
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert use_fastdds_profile(cyclone) is None and PROFILE_ENV not in cyclone


def test_jazzy_fast_dds_2_reads_the_legacy_variable():
    jazzy = {"ROS_DISTRO": "jazzy"}
    assert use_fastdds_profile(jazzy) == fastdds_profile_path() and set(jazzy) == {"ROS_DISTRO", LEGACY_PROFILE_ENV}
    named_the_new_way = {"ROS_DISTRO": "jazzy", PROFILE_ENV: "/etc/my_profile.xml"}
    assert use_fastdds_profile(named_the_new_way) == Path("/etc/my_profile.xml")
    assert named_the_new_way[LEGACY_PROFILE_ENV] == "/etc/my_profile.xml"


@pytest.mark.parametrize("reliability", ["reliable", "best_effort"])
def test_300k_point_clouds_reach_another_process_without_loss(reliability):
    """7.2 MB clouds at 10 Hz; best effort is lost almost entirely without the profile (ENVIRONMENT.md)."""
    count = 10
    env = os.environ.copy()
    env.pop(profile_variable(env), None)
    use_fastdds_profile(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(PEER)]
    listener = subprocess.Popen(
        [*command, "sub", reliability, str(count)], env=env, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        talker = subprocess.run([*command, "pub", reliability, str(count)], env=env, timeout=120, cwd=REPO_ROOT)
        assert talker.returncode == 0
        summary = json.loads(listener.communicate(timeout=60)[0].strip().splitlines()[-1])
    finally:
        if listener.poll() is None:
            listener.kill()
    assert summary["received"] == list(range(count))
    assert summary["valid"] == count
