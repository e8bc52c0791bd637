"""Shadow versions: a second version of a model runs beside the live one, its results are
stored and compared, never delivered; ``medseg promote`` makes it live."""
