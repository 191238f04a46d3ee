"""The ROS 2 nodes and what they are made of: inputs, synchronisation, poses, parameters, QoS, reporting."""
