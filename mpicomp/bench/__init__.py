"""Benchmarks: ``python -m mpicomp.bench compressors`` (and, later, ``collectives``).

Speed is always a ratio to a baseline measured in the same run, interleaved with the
measurement, because shared machines are noisy.
"""
