"""continual: a continual-learning research library for PyTorch.

Streams of experiences held as device tensors, one short training loop with plugin hooks,
the accuracy matrix and its metrics, baselines, plots and a CLI.
"""

__version__ = "0.1.0"

from .benchmarks import BENCHMARKS, Benchmark, get_benchmark, make_stream
from .data import Dataset, Transform, digits, synthetic
from .errors import ContinualError
from .experiment import RunConfig, run
from .metrics import (
    AccuracyMatrix,
    accuracy_curve,
    average_accuracy,
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    intransigence,
    learning_accuracy,
    mean_ci,
)
from .models import MLP, ConvNet, build_model
from .results import Result, find_results, load_result, save_result
from .strategies import STRATEGIES, Strategy, get_strategy, register
from .streams import Experience, Stream, concat, permuted, rotated, split
from .trainer import Plugin, Trainer
from . import regularizers  # after strategies: registers ewc, online-ewc, si, mas, l2, lwf
from .regularizers import EWC, L2, MAS, SI, LwF, combine

__all__ = [
    "AccuracyMatrix", "BENCHMARKS", "Benchmark", "ContinualError", "ConvNet", "Dataset", "EWC", "Experience", "L2", "LwF",
    "MAS", "MLP", "SI",
    "Plugin", "Result", "RunConfig", "STRATEGIES", "Strategy", "Stream", "Trainer", "Transform",
    "accuracy_curve", "average_accuracy", "average_forgetting", "average_incremental_accuracy",
    "backward_transfer", "build_model", "combine", "concat", "digits", "final_average_accuracy", "find_results",
    "forgetting", "forward_transfer", "get_benchmark", "get_strategy", "intransigence", "learning_accuracy",
    "load_result", "make_stream", "mean_ci", "permuted", "register", "regularizers", "rotated", "run", "save_result", "split",
    "synthetic",
]
