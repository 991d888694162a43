"""Training and judging the bundled shapes model: data set, architectures, tokenizer,
the judge classifier, metrics, and the step-budgeted trainer behind ``nodeflow train-demo``."""

# diffusers imports torchvision (through transformers) when it is installed: make that
# import work first, as the diffusion pack does (nodes/diffusion/impl/torchvision_compat.py).
import nodes.diffusion.impl  # noqa: F401
