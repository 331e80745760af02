"""Neural-network training with PyTorch (needs the optional dependency torch)."""
