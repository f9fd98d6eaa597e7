"""Reflective Context Learning: agents that learn in context space (being built, issue 6)."""
