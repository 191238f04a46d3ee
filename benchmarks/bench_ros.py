"""scene_node over real DDS: keyframe latency, a 30 Hz input stream, 300k-point cloud delivery, node RSS.

scene_node runs in its own process (``python -m ovseg3d_ros.tools.bringup --nodes scene``) with the
noisy-oracle backend (named so everywhere: it reads ``semantic/image``, it is no VLM) on rendered
ScanNet views, geometric purification every ``purify_period_s`` and the default ``queue_size``.

- Keyframe latency: one frame every ``--latency-gap`` seconds, stamped with the wall clock at
  publication (every frame is a keyframe); latency = arrival of the first ``labeled_cloud`` whose
  stamp is >= the frame's stamp, minus that stamp. It includes waiting for the purification period.
- Stream: a few pre-converted frames republished at 30 Hz with fresh stamps (and matching
  ``camera_pose``); cycling distinct views makes every frame a keyframe (worst case).
  ``frames_dropped`` is the node's own counter from its status log lines
  ("frames N (keyframes K, dropped D, ...)"): frames its bounded queue discarded, difference between
  the last status line after the stream and the last one before it. Frames lost before the
  synchroniser (published minus counted) are reported as ``frames_not_synchronised``.
- Clouds: ``tests/cloud_peer.py`` publisher and subscriber processes exchange 300k-point labeled
  clouds with reliable QoS and the shared-memory profile; every received cloud is checked byte by byte.
- RSS: the node process sampled every 0.5 s with psutil over the whole run (PNG over time).
- Baseline (transport floor): one 640x480 RGB image round trip to an echo process (this script in
  ``--echo`` mode) and back; half of it is the one-way floor of one image.

Writes ``benchmarks/results/ros.json``, ``ros.md`` and ``ros_rss.png`` (``--quick``: ``ros_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

os.environ.setdefault("ROS_DOMAIN_ID", "77")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from ovseg3d_ros.conversions import nanoseconds_to_stamp, stamp_to_nanoseconds
from ovseg3d_ros.fastdds_profile import use_fastdds_profile
from ovseg3d_ros.nodes.qos import cloud_output_qos, sensor_input_qos
from ovseg3d_ros.nodes.scene_node import SceneNodeConfig
from ovseg3d_ros.nodes.shutdown import spin_until_shutdown
from ovseg3d_ros.tools.bag import dataset_frames, frame_messages

use_fastdds_profile()  # before rclpy.init in this process; children inherit the variable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STREAM_HZ = 30.0
PING, PONG = "bench_ros/ping", "bench_ros/pong"
STATUS = re.compile(r"frames (\d+) \(keyframes (\d+), dropped (\d+)")
PARAMS = """
scene_node:
  ros__parameters:
    purify_period_s: {purify_period_s}
    status_period_s: 1.0
    use_tf: false
    keyframes: {{translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}}
    segmenter:
      purification: geometric
      encoders: {{dense: noisy_oracle}}
      scene: {{voxel_size: 0.05}}
      pooling: {{k: 16, iterations: 4}}
"""


def echo_main() -> None:
    """Republish every ping image as a pong (the far end of the transport-floor round trip)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("bench_ros_echo")
    pong = node.create_publisher(Image, PONG, cloud_output_qos())
    node.create_subscription(Image, PING, pong.publish, cloud_output_qos())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)
    finally:
        rclpy.try_shutdown()


class RssSampler(threading.Thread):
    """Samples a process's resident set size (MiB) every ``period_s`` until stopped."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        import psutil

        super().__init__(daemon=True)
        self.process, self.period_s = psutil.Process(pid), period_s
        self.samples: list[tuple[float, float]] = []
        self.start_time = time.monotonic()
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.wait(self.period_s):
            try:
                self.samples.append((time.monotonic() - self.start_time, self.process.memory_info().rss / 2**20))
            except psutil.Error:
                return


class Bench:
    """The benchmark's own node: frame publishers, a labeled_cloud subscriber, an image ping-pong."""

    def __init__(self, context, frame: list[tuple[str, object]]) -> None:
        """Publishers for the topics of one frame's messages (whatever the bag converter emits)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, PointCloud2

        self.node = rclpy.create_node("bench_ros", context=context)
        self.publishers = {t: self.node.create_publisher(type(m), t, sensor_input_qos()) for t, m in frame}
        self.clouds: list[tuple[int, int]] = []  # (arrival wall ns, header stamp ns)
        self.node.create_subscription(PointCloud2, "labeled_cloud", self._on_cloud, cloud_output_qos())
        self.ping = self.node.create_publisher(Image, PING, cloud_output_qos())
        self.pongs: list[int] = []
        self.node.create_subscription(Image, PONG, lambda _msg: self.pongs.append(time.perf_counter_ns()), 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_cloud(self, msg) -> None:
        self.clouds.append((time.time_ns(), stamp_to_nanoseconds(msg.header.stamp)))

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self.publishers.values()):
                return True
            time.sleep(0.1)
        return False

    def publish_frame(self, messages: list[tuple[str, object]], stamp_ns: int) -> None:
        """Publish one pre-converted frame with a fresh stamp; the pose first, as a camera driver would."""

        stamp = nanoseconds_to_stamp(stamp_ns)
        for topic, msg in sorted(messages, key=lambda item: item[0] != "camera_pose"):
            msg.header.stamp = stamp
            self.publishers[topic].publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def status_counts(log_path: Path) -> list[tuple[int, int, int]]:
    """(frames, keyframes, dropped) of every status line the node has written so far."""
    return [tuple(map(int, m.groups())) for m in STATUS.finditer(log_path.read_text(errors="replace"))]


def measure_latency(bench: Bench, messages: list, frames: int, gap_s: float, timeout_s: float) -> list[float]:
    latencies = []
    for index in tqdm(range(frames), desc="keyframe latency", unit="frame"):
        stamp_ns = time.time_ns()
        bench.publish_frame(messages[index % len(messages)], stamp_ns)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            arrived = [t for t, s in list(bench.clouds) if s >= stamp_ns]
            if arrived:
                latencies.append((arrived[0] - stamp_ns) / 1e6)
                break
            time.sleep(0.005)
        time.sleep(gap_s)
    return latencies


def measure_stream(bench: Bench, messages: list, seconds: float, log_path: Path) -> dict:
    time.sleep(1.5)  # a status line from before the stream
    before = status_counts(log_path)[-1]
    published, start = 0, time.perf_counter()
    with tqdm(total=int(seconds * STREAM_HZ), desc=f"{STREAM_HZ:.0f} Hz stream", unit="frame") as bar:
        while (elapsed := time.perf_counter() - start) < seconds:
            due = start + published / STREAM_HZ
            if due > time.perf_counter():
                time.sleep(due - time.perf_counter())
            bench.publish_frame(messages[published % len(messages)], time.time_ns())
            published += 1
            bar.update()
    input_hz = published / elapsed
    time.sleep(3.0)  # the node drains its queue and logs at least once more
    after = status_counts(log_path)[-1]
    counted = after[0] - before[0]
    return {
        "seconds": round(elapsed, 2),
        "frames_published": published,
        "input_hz": round(input_hz, 2),
        "frames_synchronised": counted,
        "frames_not_synchronised": published - counted,
        "frames_dropped": after[2] - before[2],
        "keyframes_integrated": after[1] - before[1],
    }


def measure_transport_floor(bench: Bench, image, rounds: int) -> list[float]:
    """Round trips (ms) of one RGB image to the echo process and back."""
    deadline = time.monotonic() + 20
    while bench.ping.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    trips = []
    for _ in tqdm(range(rounds), desc="image round trip", unit="trip"):
        seen = len(bench.pongs)
        sent = time.perf_counter_ns()
        bench.ping.publish(image)
        deadline = time.monotonic() + 5
        while len(bench.pongs) == seen and time.monotonic() < deadline:
            time.sleep(0.0002)
        if len(bench.pongs) > seen:
            trips.append((bench.pongs[seen] - sent) / 1e6)
        time.sleep(0.02)
    return trips


def measure_cloud_delivery(count: int) -> dict:
    """300k-point clouds between two processes (tests/cloud_peer.py), reliable QoS + the profile.

    The peers get a ROS domain of their own: scene_node, still running, publishes ``labeled_cloud`` too.
    """
    peer = [sys.executable, str(REPO / "tests" / "cloud_peer.py")]
    env = {**os.environ, "ROS_DOMAIN_ID": str(int(os.environ["ROS_DOMAIN_ID"]) + 1)}
    receiver = subprocess.Popen(
        [*peer, "sub", "reliable", str(count)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert receiver.stdout is not None
    receiver.stdout.readline()  # "ready"
    start = time.perf_counter()
    subprocess.run([*peer, "pub", "reliable", str(count)], check=True, capture_output=True, timeout=120, env=env)
    output = receiver.communicate(timeout=60)[0]
    summary = json.loads(output.strip().splitlines()[-1])
    return {
        "clouds_sent": count,
        "clouds_received": len(summary["received"]),
        "clouds_byte_exact": summary["valid"],
        "cloud_delivery_ratio": round(summary["valid"] / count, 4),
        "seconds": round(time.perf_counter() - start, 2),
    }


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def plot_rss(samples: list[tuple[float, float]], marks: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    if samples:
        axis.plot(*zip(*samples, strict=True), color="tab:blue")
    for name, at in marks.items():
        axis.axvline(at, color="grey", linestyle=":")
        axis.text(at, axis.get_ylim()[1], f" {name}", va="top", fontsize=8)
    axis.set_xlabel("seconds since scene_node start")
    axis.set_ylabel("RSS (MiB)")
    axis.set_title("scene_node resident memory (noisy oracle backend)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_markdown(result: dict, path: Path) -> None:
    s, c, t = result["stream"], result["clouds"], result["transport_floor"]
    lines = [
        f"# scene_node over DDS ({'quick' if result['quick'] else 'full'} run)",
        "",
        f"Backend: {result['backend']}; {result['frames']} rendered ScanNet views; geometric purification every "
        f"{result['purify_period_s']} s; queue_size {result['queue_size']}; CPU: {result['cpu_count']} cores "
        "(shared with other work).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| keyframe_to_cloud_ms p50 / p95 ({len(result['keyframe_latencies_ms'])} keyframes) | "
        f"{result['keyframe_to_cloud_ms_p50']} / {result['keyframe_to_cloud_ms_p95']} |",
        f"| baseline: 640x480 RGB image round trip p50 / p95 (ms) | {t['round_trip_ms_p50']} / "
        f"{t['round_trip_ms_p95']} |",
        f"| baseline: one-way image floor p50 (ms) | {t['one_way_ms_p50']} |",
        f"| input stream: target / achieved Hz over {s['seconds']} s | {STREAM_HZ:.0f} / {s['input_hz']} |",
        f"| frames published / synchronised by the node | {s['frames_published']} / {s['frames_synchronised']} |",
        f"| frames_dropped (node's bounded queue) | {s['frames_dropped']} |",
        f"| keyframes integrated during the stream | {s['keyframes_integrated']} |",
        f"| 300k-point clouds sent / received byte-exact | {c['clouds_sent']} / {c['clouds_byte_exact']} |",
        f"| cloud_delivery_ratio | {c['cloud_delivery_ratio']} |",
        f"| node RSS at start / max (MiB) | {result['rss_mb_start']} / {result['rss_mb_max']} |",
        "",
        "Keyframe latency includes waiting for the next purification (period above) plus purification, "
        "labeling and transport; the image round trip is the DDS floor on this machine. `frames_dropped` is "
        "the node's own counter (status log lines, after minus before the stream): frames its bounded queue "
        "discarded so the worker never falls behind without limit; `frames_synchronised` is the frame count "
        "from the same lines. The stream cycles a few distinct views, so every frame is a keyframe (the 2D "
        "source and lifting run on each): a worst case for the worker. RSS over time: `" + result["rss_png"] + "`.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s): few frames, 10 s stream")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stream-seconds", type=float, default=None, help="length of the 30 Hz stream")
    parser.add_argument("--latency-gap", type=float, default=1.0, help="seconds between latency frames")
    parser.add_argument("--purify-period", type=float, default=1.0, help="scene_node purify_period_s")
    args = parser.parse_args(argv)
    if args.echo:
        echo_main()
        return 0

    import rclpy

    quick = args.quick
    n_frames, n_latency, rounds, n_clouds = (4, 5, 30, 10) if quick else (8, 20, 200, 50)
    stream_seconds = args.stream_seconds or (10.0 if quick else 60.0)
    frames = list(tqdm(dataset_frames("scannet", n_frames), total=n_frames, desc="render views", unit="view"))
    messages = [
        [(topic.lstrip("/"), msg) for topic, msg in frame_messages(f, 0, "camera_optical_frame", "map")] for f in frames
    ]

    workdir = Path(tempfile.mkdtemp(prefix="bench_ros_"))
    params, log_path = workdir / "params.yaml", workdir / "scene_node.log"
    params.write_text(PARAMS.format(purify_period_s=args.purify_period))
    with log_path.open("w") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "ovseg3d_ros.tools.bringup", "--nodes", "scene", "--params", str(params)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    echo = subprocess.Popen([sys.executable, __file__, "--echo"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    sampler = RssSampler(node.pid)
    sampler.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    bench = Bench(context, messages[0])
    marks: dict[str, float] = {}
    try:
        if not bench.wait_for_subscribers(60):
            raise RuntimeError(f"scene_node did not subscribe within 60 s; its log:\n{log_path.read_text()}")
        time.sleep(0.5)
        trips = measure_transport_floor(bench, dict(messages[0])["rgb/image"], rounds)
        marks["latency"] = time.monotonic() - sampler.start_time
        latencies = measure_latency(bench, messages, n_latency, args.latency_gap, timeout_s=30)
        marks["stream"] = time.monotonic() - sampler.start_time
        stream = measure_stream(bench, messages, stream_seconds, log_path)
        marks["clouds"] = time.monotonic() - sampler.start_time
        clouds = measure_cloud_delivery(n_clouds)
        if node.poll() is not None:
            raise RuntimeError(f"scene_node exited with {node.returncode}; its log:\n{log_path.read_text()}")
    finally:
        sampler.stop.set()
        bench.close()
        rclpy.shutdown(context=context)
        for process in (node, echo):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    rss = [mb for _, mb in sampler.samples]
    suffix = "_quick" if quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"ros{suffix}_rss.png"
    plot_rss(sampler.samples, marks, png)
    result = {
        "quick": quick,
        "backend": "noisy oracle",
        "frames": n_frames,
        "purify_period_s": args.purify_period,
        "queue_size": SceneNodeConfig().queue_size,
        "cpu_count": os.cpu_count(),
        "keyframe_to_cloud_ms_p50": percentile(latencies, 50),
        "keyframe_to_cloud_ms_p95": percentile(latencies, 95),
        "keyframe_latencies_ms": [round(v, 1) for v in latencies],
        "keyframes_without_cloud": n_latency - len(latencies),
        "input_hz": stream["input_hz"],
        "frames_dropped": stream["frames_dropped"],
        "stream": stream,
        "cloud_delivery_ratio": clouds["cloud_delivery_ratio"],
        "clouds": clouds,
        "rss_mb_start": round(rss[0], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_mb_end": round(rss[-1], 1) if rss else None,
        "rss_png": png.name,
        "transport_floor": {
            "what": "640x480 RGB Image round trip to an echo process (reliable QoS, Fast DDS profile)",
            "round_trips": len(trips),
            "round_trip_ms_p50": percentile(trips, 50),
            "round_trip_ms_p95": percentile(trips, 95),
            "one_way_ms_p50": round(float(np.median(trips)) / 2, 2) if trips else None,
        },
        "scene_node_exit_code": node.returncode,
    }
    (RESULTS / f"ros{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, RESULTS / f"ros{suffix}.md")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (dict, list))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
