"""Generated protobuf modules (``python scripts/gen_protos.py``); do not edit."""
