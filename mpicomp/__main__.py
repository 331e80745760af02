"""``python -m mpicomp``: the ``mpicomp`` command (`mpicomp.cli`)."""

import sys

from .cli import main

sys.exit(main())
