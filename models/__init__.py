"""The one loading layer: every model (trained, compiled, pretrained) enters mechscope here.

Example:
    >>> from models import load_model
    >>> lm = load_model("task:sort")          # doctest: +SKIP
    >>> lm.predict([3, 1, 2])                 # doctest: +SKIP
    [1, 2, 3]
"""

from models.codec import TaskCodec
from models.errors import (
    CheckpointError,
    InputError,
    ModelError,
    TrainingError,
    UnknownModelError,
    UnsupportedArchitectureError,
)
from models.loaded import LoadedModel, ModelCard
from models.loader import ModelInfo, list_models, load_model
from models.spec import ModelSpec

__all__ = [
    "CheckpointError",
    "InputError",
    "LoadedModel",
    "ModelCard",
    "ModelError",
    "ModelInfo",
    "ModelSpec",
    "TaskCodec",
    "TrainingError",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "list_models",
    "load_model",
]
