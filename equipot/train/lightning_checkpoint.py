"""A Potential from a Lightning training checkpoint (``checkpoints/best.ckpt``, ``last.ckpt``).

A checkpoint holds the optimiser's weights (``model.*``) and their moving average
(``ema.module.*``), and the model config with its statistics (hyperparameters), so either set
of weights can be rebuilt without the data: to inspect a run, or to compare the two.
"""

from __future__ import annotations

from pathlib import Path

import torch

from equipot.model.build import DTYPES, build_potential
from equipot.model.potential import Potential

PREFIXES = {"raw": "model.", "ema": "ema.module."}


def model_from_checkpoint(path: str | Path, weights: str = "raw") -> Potential:
    """The ``"raw"`` or ``"ema"`` weights of the checkpoint ``path``, in eval mode on the CPU,
    in the dtype they were trained in."""
    if weights not in PREFIXES:
        raise ValueError(f"weights are 'raw' or 'ema', got {weights!r}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    settings = saved["hyper_parameters"]
    model = build_potential(settings["model_config"], dtype=DTYPES[settings["dtype"]])
    prefix = PREFIXES[weights]
    model.load_state_dict({name.removeprefix(prefix): value
                           for name, value in saved["state_dict"].items()
                           if name.startswith(prefix)})
    return model.eval()
