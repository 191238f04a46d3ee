"""Tools around the nodes: one-process bringup, bag writing/playing, the service client and the demo."""
