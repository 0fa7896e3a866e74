"""Preprocessing in scverse's ``pp`` style: :mod:`w1ot.preprocessing` under its short name."""

from w1ot.preprocessing import highly_variable_genes, normalize_log1p

__all__ = ["highly_variable_genes", "normalize_log1p"]
