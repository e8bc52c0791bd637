"""Chest CT: left and right lungs by a 2D U-Net (serve.py), NRRD reader, training, evaluation,
phantoms.
"""
