"""One series through the stages: load, calibrate, route, infer (model cache, device, precision),
export; the batch mode of ``medseg process``.
"""
