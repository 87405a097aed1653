"""Test-only stand-in for `torch_sparse.spmm`, so that the original difftopk's sparse networks
can serve as a numerical reference where the compiled torch-sparse is not installed."""

from __future__ import annotations

import torch


def spmm(index: torch.Tensor, value: torch.Tensor, m: int, n: int, matrix: torch.Tensor) -> torch.Tensor:
    """(sparse m x n matrix with entries `value` at `index` [2, nnz]) @ `matrix` [n, k]."""
    sparse = torch.sparse_coo_tensor(index, value, (m, n), dtype=value.dtype, device=value.device)
    return torch.sparse.mm(sparse, matrix)
