"""The diffusion pack's implementation: model loading, sampling, guidance, prompts, VAE.

Plain modules, imported by the node modules when they run (most import torch). Importing
this package (which every node module does) makes torchvision importable before anything
can import it: see :mod:`nodes.diffusion.impl.torchvision_compat`; that imports no torch."""

from nodes.diffusion.impl.torchvision_compat import install as _install_torchvision_compat

_install_torchvision_compat()
