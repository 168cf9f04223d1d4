"""CHM-Corr++ in miniature (Nguyen et al., arXiv 2404.05238): a user edits which query patches the model uses.

:mod:`.data` (synthetic 7 x 7 patch-feature birds with spurious backgrounds), :mod:`.model` (kNN shortlist,
correspondence through :class:`~graphattn.attention.GraphAttention`, re-ranking by a mask), :mod:`.users`
(simulated users and sessions), :mod:`.sessionlog` (the JSONL interaction log), :mod:`.analysis` (per-session
accuracy and t-test), :mod:`.app` (the FastAPI page; ``python -m vision.chm_corr.serve``). The experiment:
``experiments/chm_corr.py``. No training: the features are given, as the spec's small scale asks.
"""
from .analysis import analyse, analyse_folder, summarise_session
from .data import Birds, make_birds
from .model import BestMatch, CHMCorr, CosineScore, Prediction, QueryState, blend, vote
from .sessionlog import SessionLog, read_log
from .users import USERS, accept_confident, accept_stable, simulate_session, user_mask

__all__ = ["analyse", "analyse_folder", "summarise_session", "Birds", "make_birds", "BestMatch", "CHMCorr",
           "CosineScore", "Prediction", "QueryState", "blend", "vote", "SessionLog", "read_log", "USERS",
           "accept_confident", "accept_stable", "simulate_session", "user_mask"]
