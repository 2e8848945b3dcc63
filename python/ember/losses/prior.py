"""PRIOR token weights: tokens a reference model finds hard count more.

w_i = (1 − p_ref(t_i))^α, then renormalized so that the weights of each segment (a caption, a
document) average 1: c_i = k·w_i / Σ_segment w, k the number of counted tokens in the segment.
"""

from __future__ import annotations

import torch


def prior_token_weights(
    ref_logprobs: torch.Tensor,
    alpha: float = 1.0,
    segment_ids: torch.Tensor | None = None,
    ignore_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token weights (float32, the shape of ref_logprobs) from the reference model's
    log p(target). segment_ids (same shape, any integers): tokens with equal ids are one segment;
    None: one segment. ignore_mask (bool, same shape): those tokens get weight 0 and are not
    counted. A segment whose weights are all 0 keeps weights 0 (never NaN)."""
    if not ref_logprobs.is_floating_point():
        raise TypeError(f"prior_token_weights: ref_logprobs must be floating point, got {ref_logprobs.dtype}")
    if not 0 <= alpha < float("inf"):  # NaN too: it would make every weight NaN
        raise ValueError(f"prior_token_weights: alpha must be >= 0 and finite, got {alpha}")
    for name, t in (("segment_ids", segment_ids), ("ignore_mask", ignore_mask)):
        if t is not None and t.shape != ref_logprobs.shape:
            raise ValueError(
                f"prior_token_weights: {name} has shape {tuple(t.shape)}, ref_logprobs {tuple(ref_logprobs.shape)}"
            )
    lp = ref_logprobs.detach().double().flatten()
    counted = torch.ones_like(lp, dtype=torch.bool) if ignore_mask is None else ~ignore_mask.flatten().bool()
    # Only counted tokens: an ignored position's value (padding) is never used. +inf is no log p
    # (a small positive one is rounding, clamped to 0).
    if (counted & (torch.isnan(lp) | (lp == float("inf")))).any():
        raise ValueError("prior_token_weights: ref_logprobs contains NaN or +inf at a counted token")
    # 1 − p = −expm1(log p): exact for p near 1, where 1 − exp(log p) cancels.
    w = (-torch.expm1(lp.clamp_max(0))).pow(alpha)
    w = torch.where(counted, w, torch.zeros_like(w))
    if segment_ids is None:
        seg = torch.zeros(lp.shape, dtype=torch.long, device=lp.device)
        nseg = 1
    else:
        _, seg = torch.unique(segment_ids.flatten(), return_inverse=True)
        nseg = int(seg.max()) + 1 if seg.numel() else 0
    sums = torch.zeros(nseg, dtype=torch.float64, device=lp.device).index_add_(0, seg, w)
    counts = torch.zeros(nseg, dtype=torch.float64, device=lp.device).index_add_(0, seg, counted.double())
    scale = torch.where(sums > 0, counts / torch.where(sums > 0, sums, torch.ones_like(sums)), torch.zeros_like(sums))
    return (w * scale[seg]).float().view(ref_logprobs.shape)
