"""Transports: how a `Bus` reaches a hub or a broker (``inproc://``, ``grpc://``, ``grpcs://``,
``mqtt://``, ``mqtts://``)."""
