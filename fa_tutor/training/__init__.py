"""Training: a RunConfig, one loop, checkpoints."""
from .build import MODELS, build_data, build_model, build_optimizers, build_rule
from .config import RunConfig
from .loop import TrainingInterrupted, TrainResult, evaluate, train

__all__ = ["MODELS", "RunConfig", "TrainResult", "build_data", "build_model", "build_optimizers",
           "build_rule", "evaluate", "train", "TrainingInterrupted"]
