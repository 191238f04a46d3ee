"""ROS 2 nodes, message conversions and bag tools for ovseg3d (thin: no maths here).

The rosidl-generated ``ovseg3d_ros.msg`` / ``ovseg3d_ros.srv`` modules may be installed in a
different site directory than these sources (development venv); extending ``__path__`` lets
both halves form one package, as they do in a colcon install.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
