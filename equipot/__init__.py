"""equipot: machine-learned interatomic potentials with equivariant message passing."""

from equipot.calculator import EquipotCalculator
from equipot.model.build import build_potential
from equipot.model.checkpoint import load, save_model
from equipot.predict import predict
from equipot.version import __version__

__all__ = ["EquipotCalculator", "__version__", "build_potential", "load", "predict", "save_model"]
