"""The torch parts of the core: rope classifier, person detector, checkpoint contract, predictor."""
