"""continual: a continual-learning research library for PyTorch.

Streams of experiences held as device tensors, one short training loop with plugin hooks,
the accuracy matrix and its metrics, baselines, plots and a CLI.
"""

__version__ = "0.1.0"

from .benchmarks import BENCHMARKS, Benchmark, get_benchmark, make_stream
from . import user_data
from .user_data import UserDataset, from_tensors, image_folder, npz
from .data import Dataset, RandomCropFlip, Transform, cifar10, cifar100, digits, fashion_mnist, mnist, synthetic
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
    last_accuracy,
    learning_accuracy,
    mean_ci,
    old_new_accuracy,
    seen_accuracy_curve,
)
from .models import MLP, ConvNet, HeadExpansion, IncrementalClassifier, MultiHeadClassifier, ResNet18, build_model
from .replay import ER, ClassBalancedBuffer, DERpp, ExperienceBalancedBuffer, ReservoirBuffer, herding, make_buffer
from .results import Result, find_results, load_result, save_result
from .strategies import STRATEGIES, Strategy, get_strategy, register
from .streams import Experience, Stream, concat, permuted, rotated, split
from .trainer import Plugin, Trainer
from .features import cache_features
from .transfer import adapt_first, freeze, load_backbone, pretrain  # also registers the transfer strategies
from . import regularizers  # after strategies: registers ewc, online-ewc, si, mas, l2, lwf
from .regularizers import EWC, L2, MAS, SI, LwF, combine
from . import classifiers  # registers wa and bic
from .classifiers import BiasCorrection, NearestMeanClassifier, WeightAligning
from .ledger import memory_ledger
from . import expansion  # registers der
from .expansion import DER
from .replay import GDumb, ICaRL

__all__ = [
    "AccuracyMatrix", "BENCHMARKS", "Benchmark", "ClassBalancedBuffer", "ContinualError", "ConvNet", "DERpp", "Dataset", "ER",
    "EWC", "Experience", "ExperienceBalancedBuffer", "HeadExpansion", "IncrementalClassifier", "L2", "LwF", "MAS", "MLP",
    "MultiHeadClassifier", "ResNet18", "SI",
    "Plugin", "ReservoirBuffer", "Result", "RunConfig", "STRATEGIES", "Strategy", "Stream", "Trainer", "Transform",
    "accuracy_curve", "average_accuracy", "average_forgetting", "average_incremental_accuracy",
    "adapt_first", "backward_transfer", "build_model", "cache_features", "combine", "concat", "digits", "final_average_accuracy", "find_results",
    "forgetting", "forward_transfer", "freeze", "get_benchmark", "get_strategy", "herding", "intransigence", "learning_accuracy",
    "load_backbone", "load_result", "make_buffer", "make_stream", "mean_ci", "permuted", "pretrain", "register", "regularizers",
    "rotated", "run", "save_result", "split",
    "synthetic",
    "RandomCropFlip", "cifar10", "cifar100", "fashion_mnist", "mnist",
    "BiasCorrection", "NearestMeanClassifier", "WeightAligning", "classifiers", "last_accuracy", "memory_ledger",
    "old_new_accuracy", "seen_accuracy_curve", "DER", "GDumb", "ICaRL", "expansion",
    "UserDataset", "from_tensors", "image_folder", "npz", "user_data",
]
