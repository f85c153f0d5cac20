"""Training: a RunConfig, one loop, checkpoints."""
from .build import MODELS, build_data, build_model, build_optimizers, build_rule
from .config import RunConfig
from .loop import TrainingInterrupted, TrainResult, evaluate, train
from .stability import BLOWUP_FACTOR, blew_up, blow_up_epoch

__all__ = ["BLOWUP_FACTOR", "MODELS", "RunConfig", "TrainResult", "blew_up", "blow_up_epoch", "build_data",
           "build_model", "build_optimizers", "build_rule", "evaluate", "train",
           "TrainingInterrupted"]
