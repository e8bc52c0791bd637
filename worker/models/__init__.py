"""Registered models: one module each, exposing ``SPEC`` (see worker.registry)."""
