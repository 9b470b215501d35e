"""Training losses: label-smoothed cross-entropy, batch-hard triplet, centre loss, their ReID combination."""

from .center import CenterLoss
from .cross_entropy import CrossEntropyLabelSmooth
from .reid_loss import ReIDLoss, build_reid_loss
from .triplet import TripletLoss, pairwise_euclidean

__all__ = [
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "ReIDLoss",
    "TripletLoss",
    "build_reid_loss",
    "pairwise_euclidean",
]
