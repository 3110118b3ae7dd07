"""Training and evaluation (issue 11). The data layer: `build_dataset` turns a spec (an
ImageFolder or CIFAR-10 directory, ``digits``, ``pathfinder[:6|9|14]``) into train/val/test
torch Datasets with their metadata; `lightattn.train.pathfinder` generates the Long Range Arena
Pathfinder task. This package sits above `lightattn.models` and never imports `lightattn.cli`."""

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
from .pathfinder import (
    PathfinderConfig,
    PathfinderSample,
    PathfinderSet,
    generate_image,
    generate_pathfinder,
    load_pathfinder,
)

__all__ = [
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
