"""Everything in the validator that runs a model: datasets of crops, training, filter evaluation,
the paired backtest. The only validator package allowed to import torch or ``ropewatch_core.model``
(extra ``model``); the CLI imports it inside its command functions so ``ropewatch --help`` needs no torch.
"""
