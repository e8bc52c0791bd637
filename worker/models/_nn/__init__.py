"""Network code the models share: U-Net, checkpoint format, predictor, training loop, metrics."""
