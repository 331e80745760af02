"""``cupyx`` of the CuPy stand-in (see ``tests/standin/cupy``): only ``cupyx.scipy.sparse``."""
