"""Operators' actions on jobs: list, status, retry, rerun, cancel."""
