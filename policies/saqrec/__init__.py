"""SAQRec (Zhang et al., CIKM'24): aligning a sequential recommender to questionnaire satisfaction.

Read in this order: :mod:`~policies.saqrec.params` (the hyperparameter groups),
:mod:`~policies.saqrec.model` (the networks and losses), :mod:`~policies.saqrec.windows` (the
training data cut as the feature store served it), :mod:`~policies.saqrec.policy` (the registered
policy ``saqrec``: fit, update, score). The design and the choices where the paper is silent are
in ``docs/notes/saqrec.md``.
"""
from policies.saqrec.model import (NetConfig, PairMLP, SAQRecNet, beta_half_cdf, ips_bce, masked_softmax,
                                   mlse_membership, satisfaction_labels)
from policies.saqrec.params import CLICK_ONLY, VARIANTS, AlignmentParams, AuxParams, EncoderParams, TrainParams
from policies.saqrec.policy import SAQRec

__all__ = ["CLICK_ONLY", "VARIANTS", "AlignmentParams", "AuxParams", "EncoderParams", "NetConfig", "PairMLP",
           "SAQRec", "SAQRecNet", "TrainParams", "beta_half_cdf", "ips_bce", "masked_softmax", "mlse_membership",
           "satisfaction_labels"]
