"""softtopk: differentiable top-k classification learning for PyTorch."""

from importlib.metadata import version as _version

from . import metrics
from .linear_loss import LinearTopKCrossEntropyLoss, linear_topk_cross_entropy
from .losses import TopKCrossEntropyLoss, topk_cross_entropy
from .operators import soft_rank, soft_sort, soft_topk_mask
from .ranking import METHODS, rank_probabilities
from .relax.networks.layouts import sorting_network
from .smooth_topk import SmoothHardTopKLoss, SmoothTopKLoss, smooth_hard_topk_loss, smooth_topk_loss

__version__ = _version("softtopk")
__all__ = [
    "LinearTopKCrossEntropyLoss",
    "METHODS",
    "SmoothHardTopKLoss",
    "SmoothTopKLoss",
    "TopKCrossEntropyLoss",
    "linear_topk_cross_entropy",
    "metrics",
    "rank_probabilities",
    "smooth_hard_topk_loss",
    "smooth_topk_loss",
    "soft_rank",
    "soft_sort",
    "soft_topk_mask",
    "sorting_network",
    "topk_cross_entropy",
]
