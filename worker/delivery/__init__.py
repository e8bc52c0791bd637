"""Outgoing DICOM: results C-STOREd to destinations with backoff, C-STORE and C-ECHO clients."""
