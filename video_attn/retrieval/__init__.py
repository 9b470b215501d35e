"""video_attn.retrieval: feature files, a nearest-neighbour index (faiss or exact), ranked lists, pictures."""

from .features import FeatureFileError, FeatureSet, load_features, save_features
from .index import IVF_MIN_SIZE, RetrievalIndex, faiss_available, ivf_nlist
from .query import GOOD, JUNK, WRONG, RankedList, match_labels, search_ranked_lists
from .visualize import load_thumbnail, render_ranked_list, save_ranked_lists

__all__ = [
    "FeatureFileError",
    "FeatureSet",
    "load_features",
    "save_features",
    "IVF_MIN_SIZE",
    "RetrievalIndex",
    "faiss_available",
    "ivf_nlist",
    "GOOD",
    "JUNK",
    "WRONG",
    "RankedList",
    "match_labels",
    "search_ranked_lists",
    "load_thumbnail",
    "render_ranked_list",
    "save_ranked_lists",
]
