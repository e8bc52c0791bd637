"""Fetal brain MRI: per-slice U-Net, 3D clean-up, brain volume (serve.py), NIfTI reader, training,
evaluation, phantoms.
"""
