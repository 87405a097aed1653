"""softtopk: differentiable top-k classification learning for PyTorch."""

from importlib.metadata import version as _version

from .linear_loss import LinearTopKCrossEntropyLoss, linear_topk_cross_entropy
from .losses import TopKCrossEntropyLoss, topk_cross_entropy
from .networks import sorting_network
from .ranking import METHODS, rank_probabilities, soft_sort
from .smooth_topk import SmoothHardTopKLoss, SmoothTopKLoss, smooth_hard_topk_loss, smooth_topk_loss

__version__ = _version("softtopk")
__all__ = [
    "LinearTopKCrossEntropyLoss",
    "METHODS",
    "SmoothHardTopKLoss",
    "SmoothTopKLoss",
    "TopKCrossEntropyLoss",
    "linear_topk_cross_entropy",
    "rank_probabilities",
    "smooth_hard_topk_loss",
    "smooth_topk_loss",
    "soft_sort",
    "sorting_network",
    "topk_cross_entropy",
]
