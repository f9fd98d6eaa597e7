"""Transports: how a `Bus` reaches a hub (``inproc://``, ``grpc://``, ``grpcs://``)."""
