"""Helpers the tests share: factories of synthetic DICOM, service gates, database rows."""
