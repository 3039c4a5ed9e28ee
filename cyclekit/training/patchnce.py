"""PatchNCE, CUT's patchwise contrastive loss, as the official ``PatchNCELoss``.

For each query patch (a sampled feature of the output image) the positive is the key at the
same position in the input image and the negatives are the keys at the other sampled positions
of that same image (the official ``nce_includes_all_negatives_from_minibatch=False``, used by
CUT and FastCUT). The loss is cross-entropy over ``[positive, negatives] / temperature`` with
the positive at index 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The official code fills the self-similarity entries with -10 (before dividing by the
# temperature): exp(-10 / T) is ~0, so a patch is never its own negative.
_MASKED = -10.0


def patch_nce_loss(
    feat_q: torch.Tensor,
    feat_k: torch.Tensor,
    batch_size: int,
    temperature: float = 0.07,
    negatives_from_minibatch: bool = False,
) -> torch.Tensor:
    """Per-patch PatchNCE losses, shape ``(N * P,)`` (the official ``reduction='none'``).

    ``feat_q``, ``feat_k``: ``(N * P, D)``, image-major as the sample head returns them (rows
    L2-normalised there). ``feat_k`` is detached, as officially: the gradient flows through
    the queries only. ``batch_size`` is N, the number of images the rows come from; with
    ``negatives_from_minibatch`` every other patch of the whole batch is a negative (the
    official single-image setting).
    """
    if feat_q.shape != feat_k.shape or feat_q.dim() != 2:
        raise ValueError(f"queries {tuple(feat_q.shape)} and keys {tuple(feat_k.shape)} differ")
    total, dim = feat_q.shape
    if batch_size < 1 or total % batch_size:
        raise ValueError(f"{total} patches do not split into {batch_size} images")
    feat_k = feat_k.detach()
    # Positive logits: each query against the key at its own position.
    l_pos = torch.bmm(feat_q[:, None, :], feat_k[:, :, None]).reshape(total, 1)
    groups = 1 if negatives_from_minibatch else batch_size
    q = feat_q.reshape(groups, -1, dim)
    k = feat_k.reshape(groups, -1, dim)
    n = q.shape[1]
    # Negative logits: each query against every key of its group; the diagonal (its own key,
    # already the positive) is masked out.
    l_neg = torch.bmm(q, k.transpose(1, 2))
    eye = torch.eye(n, device=feat_q.device, dtype=torch.bool)[None]
    l_neg = l_neg.masked_fill(eye, _MASKED).reshape(-1, n)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    target = torch.zeros(total, dtype=torch.long, device=feat_q.device)
    return F.cross_entropy(logits, target, reduction="none")


def mean_patch_nce(
    feats_q: Sequence[torch.Tensor],
    feats_k: Sequence[torch.Tensor],
    batch_size: int,
    temperature: float = 0.07,
    negatives_from_minibatch: bool = False,
) -> torch.Tensor:
    """The official ``calculate_NCE_loss`` without its lambda: the per-layer means of
    :func:`patch_nce_loss`, averaged over the layers (multiply by λ_NCE outside)."""
    if not feats_q or len(feats_q) != len(feats_k):
        raise ValueError(f"got {len(feats_q)} query and {len(feats_k)} key layers")
    losses = [
        patch_nce_loss(q, k, batch_size, temperature, negatives_from_minibatch).mean()
        for q, k in zip(feats_q, feats_k, strict=True)
    ]
    return torch.stack(losses).mean()
