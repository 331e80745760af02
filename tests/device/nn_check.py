"""Device check of the neural-network problem: CuPy data, a PyTorch model on the same GPU.

1. zero copy: the parameters are views of the CuPy vector x, the gradient CuPy array is the
   module's flat gradient buffer (DLPack, same device pointers);
2. the float64 gradient on the GPU equals the CPU's to 1e-9 relative;
3. five SGD steps on the GPU equal the CPU's to 1e-9 relative (check.sh then trains LeNet
   with DCGD on 4 ranks with --device gpu).

Skipped (exit 0, says so) where PyTorch has no CUDA device, e.g. a dry run on the simulator.
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    try:
        import cupy
        import torch
    except ImportError as exc:
        print(f"skipped: {exc}")
        return 0
    if not torch.cuda.is_available() or not hasattr(cupy, "cuda"):
        print("skipped: PyTorch sees no CUDA device")
        return 0
    from mpicomp.nn.problem import NeuralNetwork
    from mpicomp.problems.data import load

    data = load("digits").take(np.arange(256))
    options = {"model": "lenet", "image_shape": data.image_shape, "n_classes": 10, "l2": 1e-3,
               "seed": 1}
    gpu = NeuralNetwork(cupy.asarray(data.A), cupy.asarray(data.y), **options)
    cpu = NeuralNetwork(data.A, data.y, **options)
    x_host = cpu.initial_point()
    x = cupy.asarray(x_host)
    rows = np.random.default_rng(0).integers(0, 256, size=64)
    g = gpu.grad(x, rows)
    failures = 0
    offset = 0
    for name, p in gpu.module.named_parameters():
        if p.data_ptr() != x.data.ptr + offset * x.itemsize:
            print(f"parameter {name} is not a view of x")
            failures += 1
        offset += p.numel()
    if g.data.ptr != gpu.module.mpicomp_flat_grad.data_ptr():
        print("the gradient is not the module's flat gradient buffer")
        failures += 1
    want = cpu.grad(x_host, rows)
    rel = float(np.linalg.norm(cupy.asnumpy(g) - want) / np.linalg.norm(want))
    print(f"float64 gradient, GPU vs CPU: relative difference {rel:.2e}")
    failures += rel > 1e-9
    cpu_x, gpu_x = x_host.copy(), x.copy()
    for _ in range(5):
        cpu_x -= 0.1 * cpu.grad(cpu_x, rows)
        gpu_x -= 0.1 * gpu.grad(gpu_x, rows)
    rel = float(np.linalg.norm(cupy.asnumpy(gpu_x) - cpu_x) / np.linalg.norm(cpu_x))
    print(f"five SGD steps, GPU vs CPU: relative difference {rel:.2e}")
    failures += rel > 1e-9
    print(f"neural network on the GPU: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
