"""``cupyx.scipy`` of the CuPy stand-in: only ``cupyx.scipy.sparse``."""
