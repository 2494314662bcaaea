"""``python -m equipot ...``: the ``equipot`` command."""
import sys

from .cli.main import main

sys.exit(main())
