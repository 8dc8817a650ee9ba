"""A model's Dense layers after pooling (sentence-transformers' Dense modules), in numpy.

At export their weights are read from the model folder into one file beside the graphs
(HEAD_FILE); the encoder applies them to the pooled vectors. Pure numpy at serve time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.specs import DenseLayer

HEAD_FILE = "dense_head.npz"

# sentence-transformers writes the activation as the torch class path.
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": np.tanh,
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.ReLU": lambda x: np.maximum(x, 0),
    "torch.nn.modules.activation.Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


class Head:
    """The Dense layers of one model, applied in order to (b, d) pooled vectors."""

    def __init__(self, layers: tuple[DenseLayer, ...], weights: dict[str, np.ndarray]):
        self.steps = [(weights[f"w{i}"].astype(np.float32), weights.get(f"b{i}"), ACTIVATIONS[layer.activation])
                      for i, layer in enumerate(layers)]

    @classmethod
    def load(cls, layers: tuple[DenseLayer, ...], root: Path) -> "Head | None":
        if not layers:
            return None
        with np.load(Path(root) / HEAD_FILE) as z:
            return cls(layers, {k: z[k] for k in z.files})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for w, b, act in self.steps:
            x = x @ w.T
            if b is not None:
                x = x + b
            x = act(x)
        return x.astype(np.float32, copy=False)


def save_head(weights: list[tuple[np.ndarray, np.ndarray | None]], root: Path) -> Path:
    """The layers' (weight, bias) arrays, in order, into HEAD_FILE."""
    arrays = {}
    for i, (w, b) in enumerate(weights):
        arrays[f"w{i}"] = np.asarray(w, dtype=np.float32)
        if b is not None:
            arrays[f"b{i}"] = np.asarray(b, dtype=np.float32)
    target = Path(root) / HEAD_FILE
    np.savez(target, **arrays)
    return target
