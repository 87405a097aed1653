"""Ranking relaxations behind `softtopk.rank_probabilities`.

Every relaxation takes validated 2-D scores `[B, n]` (float32 or float64) and provides the
rank-probability matrix `[B, n, k]` and the one-item fast path `[B, k]`.
"""
