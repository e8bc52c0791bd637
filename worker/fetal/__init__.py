"""Fetal head biometry on 2D ultrasound: U-Net skull segmentation, ellipse, HC/BPD/OFD/GA."""
