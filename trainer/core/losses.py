"""Every loss from the seed notes that fits a 10-class classifier.

The model always returns raw logits [B, C] and the batches carry class
indices [B]. Losses that want something else (probabilities, one-hot
targets, log-rates) adapt here, so the Trainer never special-cases a loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.core.errors import UserError


class CrossEntropy(nn.CrossEntropyLoss):
    """Softmax cross-entropy on logits, with optional label smoothing."""


class NLL(nn.Module):
    """Negative log-likelihood of log_softmax(logits): the classic pairing."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=1), target)


def _one_hot(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class indices [B] as one-hot rows shaped and typed like the logits."""
    return F.one_hot(target, logits.shape[1]).to(logits.dtype)


class MSE(nn.Module):
    """Mean squared error between softmax probabilities and the one-hot target.

    On raw logits MSE pulls them towards 0/1 and trains poorly; on the
    softmax it is the well-known (bounded) Brier-score loss.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(torch.softmax(logits, dim=1), _one_hot(logits, target))


class BCE(nn.Module):
    """Binary cross-entropy per class (one-vs-rest) against one-hot targets.

    Uses the with-logits form: nn.BCELoss on sigmoid outputs is the same
    maths but loses precision and can produce log(0).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, _one_hot(logits, target))


class PoissonNLL(nn.Module):
    """Poisson NLL with the logits read as log-rates and one-hot counts."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.poisson_nll_loss(logits, _one_hot(logits, target), log_input=True)


class MultiMargin(nn.MultiMarginLoss):
    """The multi-class hinge loss (SVM-style margin on the logits)."""


class PairwiseOnly(nn.Module):
    """Placeholder for losses that need pairs or triplets, which a classifier does not produce."""

    def __init__(self, name: str, needs: str):
        super().__init__()
        raise UserError(
            f"loss={name} needs {needs}, but this trainer feeds (image, class) batches to a classifier; "
            "choose loss=cross_entropy, nll, mse, bce, poisson_nll or multi_margin"
        )
