"""Entry points: ``python -m apps.<name>`` (or ``mpiexec -n N python -m apps.<name>``).

Each app is a thin wrapper around `mpicomp.run.main` with its own defaults; ``--help`` lists
every setting. Not installed with the package: run them from the repository root.
"""
