"""Chest CT: left and right lungs by HU threshold and connected components (serve.py); the
reference the U-Net is trained and checked against.
"""
