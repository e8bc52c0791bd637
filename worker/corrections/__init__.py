"""Corrections: a reviewer's corrected result (a fetal head ellipse moved, a corrected SEG sent
back over C-STORE) made into a new result that replaces the old one: measurements recomputed
by the model's own code, a new SEG and SR (the SR names the one it replaces), delivered as
any result is. The stage after review; the worker applies them (``apply.execute_correction``).
"""
