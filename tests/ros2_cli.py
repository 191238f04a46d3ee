"""Run the real `ros2` tools from tests: `ros2 launch` in its own session, CLI commands, and parsers of what they print.

``ros2 launch`` is stopped with SIGINT (SIGTERM would leave its nodes running); the CLI runs without
the daemon, which races discovery (shared/ros2_tools/README.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from ovseg3d_ros.fastdds_profile import profile_variable

VENV = Path(sys.prefix)
PROFILE_ENV = profile_variable()  # the variable this distribution's Fast DDS reads (FASTRTPS_... on Jazzy)
# Without the daemon each command discovers the graph itself: 5 s of spinning finds the nodes even on a busy machine.
CLI = ("--no-daemon", "--spin-time", "5")
# scene_node settings that map a replayed bag quickly on a small machine: every frame a keyframe, cheap purification.
SCENE_PARAMS = """
scene_node:
  ros__parameters:
    purify_period_s: 0.5
    status_period_s: 1.0
    keyframes: {translation_m: 0.0, rotation_deg: 0.0, interval_s: 0.0}
    segmenter:
      purification: geometric
      scene: {voxel_size: 0.05}
      pooling: {k: 16, iterations: 4}
"""


def tools_env(**overrides: str) -> dict[str, str]:
    """The environment of `ros2`: the venv's ament index and executables first, unbuffered node output."""
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    env.update(PYTHONUNBUFFERED="1", **overrides)
    return env


class Running:
    """A running command (`ros2 launch`, `ros2 topic hz`) and its log; ``code`` is its exit status once stopped."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log
        self.code: int | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first match of ``pattern`` in the log, waiting up to ``timeout`` seconds (fails if it exits)."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.output())) is None:
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout:.0f} s:\n{self.output()[-4000:]}"
            assert self.process.poll() is None, f"{self.process.args} exited:\n{self.output()[-4000:]}"
            time.sleep(0.2)
        return found

    def pid_of(self, node: str) -> int:
        return int(self.wait_for(rf"\[{node}-\d+\]: process started with pid \[(\d+)\]", 30)[1])


def interruptible() -> None:
    """Ctrl-C's default action in a child, as a terminal gives it. A shell starts background jobs (e.g. CI
    under nohup) with SIGINT ignored, children inherit that, and Python then never installs its handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def running(command: Sequence[str], env: dict[str, str], log: Path) -> Iterator[Running]:
    """Run ``command`` in its own session with exactly ``env``, output to ``log``; on exit SIGINT, as Ctrl-C."""
    with log.open("w") as output:
        process = subprocess.Popen(
            list(command),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=interruptible,
        )
    started = Running(process, log)
    try:
        yield started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            started.code = process.wait(timeout=60)  # nodes finish what they are doing first
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def launching(command: Sequence[str], env: dict[str, str], log: Path, died: tuple[str, ...] = ()) -> Iterator[Running]:
    """Run ``command`` (`ros2 launch`, or a shell exec'ing it) with exactly ``env``; on exit SIGINT, which must
    stop every node cleanly but the ``died`` ones."""
    try:
        with running(command, env, log) as launched:
            yield launched
    finally:
        print(log.read_text(errors="replace")[-6000:])
    assert launched.code == 0, f"ros2 launch did not stop on SIGINT (exit {launched.code})"
    started = re.findall(r"\[(\S+)-\d+\]: process started", launched.output())
    stopped = re.findall(r"\[(\S+)-\d+\]: process has finished cleanly", launched.output())
    assert sorted(started) == sorted(stopped + list(died)), f"started {started}, finished cleanly {stopped}"


@contextmanager
def ros2_launch(
    tmp_path: Path,
    launch_file: str,
    *arguments: str,
    unset: tuple[str, ...] = (),
    died: tuple[str, ...] = (),
    **env: str,
) -> Iterator[Running]:
    """`ros2 launch ovseg3d_ros <launch_file> <arguments>` from the venv (``env`` set, ``unset`` removed)."""
    environment = {name: value for name, value in tools_env(**env).items() if name not in unset}
    command = [str(VENV / "bin" / "ros2"), "launch", "ovseg3d_ros", launch_file, *arguments]
    with launching(command, environment, tmp_path / f"{launch_file}.log", died) as launched:
        yield launched


def ros2(*commands: tuple[str, ...], timeout: float = 60, stderr: bool = False) -> list[str]:
    """Run ros2 CLI commands one after another, in order; their outputs (with stderr appended if asked), after
    checking each succeeded.

    Not side by side: several CLI processes discovering the nodes at once on a loaded 2-core machine can leave a
    server unmatched with a client's response reader past Fast DDS's 100 ms wait (ros2/rmw_fastrtps#467); the
    response is then dropped and `ros2 service call` (or `param dump`) never returns.
    """
    outputs = []
    for command in commands:
        process = subprocess.run(
            [str(VENV / "bin" / "ros2"), *command], env=tools_env(), capture_output=True, timeout=timeout
        )
        out, err = process.stdout.decode(), process.stderr.decode()
        assert process.returncode == 0, f"ros2 {' '.join(command)}: {out[-2000:]}{err[-2000:]}"
        outputs.append(out + (err if stderr else ""))
    return outputs


def node_info(text: str) -> dict[str, dict[str, str]]:
    """`ros2 node info` output as {section: {name: type}}."""
    sections: dict[str, dict[str, str]] = {}
    section = None
    for line in text.splitlines():
        if re.match(r"^  \S.*:$", line):
            section = sections.setdefault(line.strip()[:-1], {})
        elif line.startswith("    ") and section is not None:
            name, _, kind = line.strip().partition(": ")
            section[name] = kind
    return sections


def flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def dumped_parameters(text: str, node: str) -> dict:
    """`ros2 param dump` YAML as flat {name: value}."""
    return flatten(yaml.safe_load(text)[node]["ros__parameters"])


def answer(text: str) -> tuple[bool, str]:
    """(success, message) of a `ros2 service call` response."""
    found = re.search(r"response:\n.*\(success=(True|False), message='([^']*)'", text)
    assert found, text
    return found[1] == "True", found[2]


def spec(name: str):
    """The declaration of scene_node parameter ``name`` (description, range) from its config."""
    from ovseg3d_ros.nodes.scene_node import SceneNodeConfig

    return next(p for p in SceneNodeConfig.parameters() if p.name == name)
