"""``python -m apps.<name>`` from a checkout: the same apps as ``python -m mpicomp.apps.<name>``.

This folder is not installed (the wheel holds only ``mpicomp``); its package path is the one of
`mpicomp.apps`, so every app there is found here under its short name.
"""

import mpicomp.apps

__path__ = list(mpicomp.apps.__path__)
