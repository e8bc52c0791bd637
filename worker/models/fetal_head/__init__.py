"""Fetal head on 2D obstetric ultrasound: U-Net skull mask, ellipse, HC/BPD/OFD/GA (serve.py), HC18
reader, training, evaluation, phantoms.
"""
