"""One series through the stages: load, calibrate, route, infer (model cache, device, precision),
export; several series of a single-frame model through one forward pass (grouped, batching);
the batch mode of ``medseg process``.
"""
