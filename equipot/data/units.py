"""Unit names and conversion factors to equipot's units (eV, Å, eV/Å, eV/Å^3).

All factors come from :mod:`ase.units` (CODATA 2014), so a number converted here
and one converted by ASE agree to the last bit.

Names are matched case-insensitively after removing spaces, so ``"kcal/mol"``,
``"KCal/Mol"`` and ``"kcal / mol"`` are the same unit. An unknown name raises
``ValueError`` that lists the known ones.
"""
from __future__ import annotations

from ase import units as _u

#: eV per kcal/mol.
KCAL_MOL = _u.kcal / _u.mol
#: eV per kJ/mol.
KJ_MOL = _u.kJ / _u.mol
#: eV per Hartree.
HARTREE = _u.Hartree
#: Å per Bohr.
BOHR = _u.Bohr

#: factor that turns a value in the named unit into eV
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "kcal/mol": KCAL_MOL,
    "kj/mol": KJ_MOL,
    "hartree": HARTREE,
    "ha": HARTREE,
    "au": HARTREE,
    "rydberg": _u.Rydberg,
    "ry": _u.Rydberg,
}

#: factor that turns a value in the named unit into Å
LENGTH_UNITS: dict[str, float] = {
    "angstrom": 1.0,
    "ang": 1.0,
    "a": 1.0,
    "å": 1.0,
    "bohr": BOHR,
    "au": BOHR,
    "nm": 10.0,
    "pm": 0.01,
}

#: canonical spelling written to the HDF5 attributes
ENERGY_UNIT = "eV"
LENGTH_UNIT = "Angstrom"
FORCE_UNIT = "eV/Angstrom"
STRESS_UNIT = "eV/Angstrom^3"


def _key(unit: str) -> str:
    return "".join(str(unit).split()).lower()


def energy_factor(unit: str, where: str = "energy unit") -> float:
    """Factor that converts energies given in ``unit`` to eV.

    ``where`` names the file and field for the error message, e.g. ``"data.npz: field 'e_unit'"``.
    """
    try:
        return ENERGY_UNITS[_key(unit)]
    except KeyError:
        known = ", ".join(sorted(ENERGY_UNITS))
        raise ValueError(f"{where}: unknown energy unit {unit!r} (known: {known})") from None


def length_factor(unit: str, where: str = "length unit") -> float:
    """Factor that converts lengths given in ``unit`` to Å."""
    try:
        return LENGTH_UNITS[_key(unit)]
    except KeyError:
        known = ", ".join(sorted(LENGTH_UNITS))
        raise ValueError(f"{where}: unknown length unit {unit!r} (known: {known})") from None
