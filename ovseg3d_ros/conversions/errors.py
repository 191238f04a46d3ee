"""The one error type every sensor_msgs <-> numpy conversion raises on malformed input."""


class MessageConversionError(ValueError):
    """A ROS message cannot be converted (missing field, size mismatch, unsupported encoding, ...).

    Nodes catch this, log a warning naming the topic and keep running: bad input never kills a node.
    """
