"""ropewatch core shared by the Nuclio function and the validator: checkpoint, model, image, logging."""
