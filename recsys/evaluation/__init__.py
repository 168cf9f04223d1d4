"""Full-ranking evaluation (exact torch or faiss), top-K metrics and a retriever for serving."""
from .evaluator import FullRankEvaluator, build_faiss_index, merge_exclude
from .indexes import index_nbytes
from .metrics import METRICS, compute_metrics, hit, mrr, ndcg, ndcg_kgat, precision, recall
from .retrieval import Retriever

__all__ = ["FullRankEvaluator", "Retriever", "build_faiss_index", "index_nbytes", "merge_exclude", "compute_metrics",
           "METRICS", "recall", "ndcg", "ndcg_kgat", "precision", "hit", "mrr"]
