"""What a model output becomes: DICOM SEG, TID 1500 SR, report.json, and the study report of
``medseg show``.
"""
