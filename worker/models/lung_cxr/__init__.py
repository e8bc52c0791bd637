"""Chest radiographs (CR/DX): lung-field U-Net and pneumonia opacity detector (serve.py), data
readers, training, evaluation, phantoms.
"""
