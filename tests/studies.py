"""Study configurations that several test modules share: one definition, not copies."""

from __future__ import annotations

# 10 replicas of a 32-wide MLP on digits with 10% label noise, 2 epochs, in 3 chunks (4, 4, 2):
# trains in about a second; the reference study of the CLI, store and executor tests.
TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "label_noise": 0.1},
    "model": {"type": "MLP", "widths": [32]},
    "subsets": {"replicas": 10, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 3,
    "chunk_size": 4,
}
