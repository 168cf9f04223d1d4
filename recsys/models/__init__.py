"""Recommendation models, one per file; importing this package registers them."""
from .base import RecModel
from .bprmf import BPRMF
from .cke import CKE
from .kgat import KGAT

__all__ = ["RecModel", "BPRMF", "CKE", "KGAT"]
