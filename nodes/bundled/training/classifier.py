"""A small CNN that judges generated images: which shape, colours, size and position.

It is trained on the procedural dataset (never on generated images) and used only to
measure prompt adherence, so a metric does not depend on the model it measures.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nodes.bundled.training.dataset import COLOUR_NAMES, POSITION_BINS, SHAPES, SIZE_BINS

HEADS = {
    "colour": len(COLOUR_NAMES),
    "shape": len(SHAPES),
    "background": len(COLOUR_NAMES),
    "size": SIZE_BINS,
    "position": POSITION_BINS * POSITION_BINS,
}


class ShapeClassifier(nn.Module):
    """``shapes``: how many shapes it tells apart (the base five; six for the judge that also
    knows the LoRA's heart)."""

    def __init__(self, width: int = 32, shapes: int = len(SHAPES)) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(3, width), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width), nn.MaxPool2d(2),  # 4x4
            nn.Flatten(), nn.Linear(4 * width * 16, 256), nn.ReLU(),
        )
        heads = {**HEADS, "shape": shapes}
        self.heads = nn.ModuleDict({name: nn.Linear(256, n) for name, n in heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: [B, 3, 32, 32] in [0, 1]. Returns logits per head."""
        features = self.features(images * 2 - 1)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images``: IMAGE layout [B, 32, 32, 3] in [0, 1]. Returns class indices per head."""
        self.eval()
        logits = self(images.permute(0, 3, 1, 2).float())
        return {name: value.argmax(-1) for name, value in logits.items()}


def save_classifier(model: ShapeClassifier, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_classifier(path: str | Path) -> ShapeClassifier:
    from safetensors.torch import load_file

    state = load_file(str(path))
    model = ShapeClassifier(shapes=int(state["heads.shape.weight"].shape[0]))
    model.load_state_dict(state)
    return model.eval()
