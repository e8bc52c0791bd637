"""Lung segmentation: chest CT volumes, the lung CT U-Net's training and evaluation."""
