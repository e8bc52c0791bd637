"""Registered models: one module each, exposing ``SPEC`` (see worker.core.registry)."""
