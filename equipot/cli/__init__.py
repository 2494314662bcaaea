"""The ``equipot`` command line: one module per subcommand, dispatched by :mod:`equipot.cli.main`."""
