"""Neural networks with PyTorch (``pip install 'mpicomp[torch]'``): ``--problem nn``.

Every method of mpicomp trains a ``torch.nn.Module`` whose parameters are one flat vector
(`mpicomp.nn.problem.NeuralNetwork`)::

    mpiexec -n 4 python -m apps.signsgd --problem nn --model lenet --data digits \\
        --lr 1e-3 --momentum 0.9 --batch 32 --iters 400 --test-fraction 0.2

``--model`` is one of `mpicomp.nn.models.MODELS` (``mlp``, ``lenet``, ``resnet20``,
``resnet18``) or the import path of your own builder, ``package.module:function``, called as
``function(image_shape, n_classes)`` with ``image_shape = (channels, height, width)``; it must
return a module with floating-point parameters that maps a batch ``(N, C, H, W)`` to logits
``(N, n_classes)``. The module is built under ``torch.manual_seed(--seed)``, so every rank
starts from the same weights.
"""
