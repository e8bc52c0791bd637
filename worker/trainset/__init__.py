"""Reviewed results as training data: ``medseg export-training`` (de-identified, in each
model's own training layout, with a manifest)."""
