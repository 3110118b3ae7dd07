"""Training and evaluation (issue 11). The data layer: `build_dataset` turns a spec (an
ImageFolder or CIFAR-10 directory, ``digits``, ``pathfinder[:6|9|14]``) into train/val/test
torch Datasets with their metadata; `lightattn.train.pathfinder` generates the Long Range Arena
Pathfinder task. `train(TrainConfig(...))` trains (the `lightattn train` command),
`evaluate_checkpoint` evaluates, `compare` puts every mechanism side by side. This package
sits above `lightattn.models` and never imports `lightattn.cli`."""

from .checkpoint import read_weights
from .compare import compare
from .config import TrainConfig, parse_kwargs
from .data import (
    Augment,
    DataBundle,
    DataError,
    ImageFileDataset,
    TensorImageDataset,
    build_dataset,
    read_image,
    stratified_split,
)
from .evaluate import evaluate_checkpoint, load_checkpoint
from .loop import Trainer, evaluate, train
from .pathfinder import (
    PathfinderConfig,
    PathfinderSample,
    PathfinderSet,
    generate_image,
    generate_pathfinder,
    load_pathfinder,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "compare",
    "evaluate",
    "evaluate_checkpoint",
    "load_checkpoint",
    "parse_kwargs",
    "read_weights",
    "train",
    "Augment",
    "DataBundle",
    "DataError",
    "ImageFileDataset",
    "PathfinderConfig",
    "PathfinderSample",
    "PathfinderSet",
    "TensorImageDataset",
    "build_dataset",
    "generate_image",
    "generate_pathfinder",
    "load_pathfinder",
    "read_image",
    "stratified_split",
]
