"""Calculators that put equipot models on ASE atoms."""
from .ase import EquiCalc

__all__ = ["EquiCalc"]
