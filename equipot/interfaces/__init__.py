"""equipot models inside other simulation programs (a "uses" layer, like ``equipot.calculators``).

- :mod:`equipot.interfaces.lammps`: ``pair_style mliap unified`` in LAMMPS, MPI domain
  decomposition included (``equipot export MODEL --lammps``).

Nothing is imported here: importing an interface pulls in torch.
"""
