"""Data of task ``sequence``: the padded pointer splits, the paper's text format, and one module per
dataset (importing it registers the dataset)."""
from .base import PAD, STOP, PointerProblem, PointerSplit, SequenceData
from .pointer_file import parse_pointer_line, read_pointer_file, write_pointer_file

__all__ = ["PAD", "STOP", "PointerProblem", "PointerSplit", "SequenceData", "parse_pointer_line",
           "read_pointer_file", "write_pointer_file"]
