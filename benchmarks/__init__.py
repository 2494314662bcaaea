"""equipot's benchmarks: one package, one entry point per measurement.

Run an entry point as ``python -m benchmarks.<name> ...`` from the repository root, or as
``python benchmarks/<name>.py ...`` from anywhere (each entry script then puts the repository
root on ``sys.path`` itself, so that form keeps working without installing the package);
``python -m benchmarks`` lists them. Results and the commands that produced them are in
``benchmarks/RESULTS.md``.

Shared parts (no entry point of their own, except ``peers``):

- ``common``: the equipot models that are timed, the test systems, the revised-MD17 data
  (converted and read through :mod:`equipot.data`), memory probes;
- ``peers``: MACE, NequIP and SchNet at their papers' settings (``python -m benchmarks.peers``
  checks which are installed);
- ``harness``: the equal-budget training harness (equipot by ``equipot.training.train``, MACE by
  the harness's own loop) behind ``train_md17``, ``accuracy`` and ``backbones``.

Data generators live in ``tools/``.
"""
