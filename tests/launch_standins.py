"""Small stand-ins for ``launch`` and ``launch_ros`` (not installable here) that record what they are given.

Each class keeps its positional and keyword arguments, so a test can import a launch file and
assert the nodes, parameters, remappings and arguments it declares.
"""

from __future__ import annotations

import sys
import types


class Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.args}{self.kwargs}"


def _module(name: str, **classes: type) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(classes)
    return module


def _recorded(*names: str) -> dict[str, type]:
    return {name: type(name, (Recorded,), {}) for name in names}


def install(monkeypatch) -> None:
    """Register the stand-ins in ``sys.modules`` for the duration of a test."""
    launch_classes = _recorded("LaunchDescription")
    modules = {
        "launch": _module("launch", **launch_classes),
        "launch.actions": _module(
            "launch.actions",
            **_recorded(
                "DeclareLaunchArgument", "SetEnvironmentVariable", "IncludeLaunchDescription", "ExecuteProcess"
            ),
        ),
        "launch.conditions": _module("launch.conditions", **_recorded("IfCondition", "UnlessCondition")),
        "launch.substitutions": _module(
            "launch.substitutions", **_recorded("LaunchConfiguration", "PathJoinSubstitution", "PythonExpression")
        ),
        "launch.launch_description_sources": _module(
            "launch.launch_description_sources", **_recorded("PythonLaunchDescriptionSource")
        ),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", **_recorded("Node")),
        "launch_ros.substitutions": _module("launch_ros.substitutions", **_recorded("FindPackageShare")),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
