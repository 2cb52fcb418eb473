"""EASQ: end-to-end alignment of user satisfaction via questionnaires (Kuaishou, 2026).

Importing this package registers the policy ``easq``. Read top to bottom: :mod:`.model` (the
network and its losses), :mod:`.windows` (training examples from logs), :mod:`.params` (the
hyperparameter groups), :mod:`.policy` (fit, score, update). The design, Eq. (1)-(4) and every
choice the abstract leaves open: docs/notes/easq.md.
"""
from policies.easq.model import DENSE_TASKS, EASQConfig, EASQNet, LoRAEmbedding, LoRALinear, dense_loss, dpo_loss
from policies.easq.params import (AlignParams, EncoderParams, LoRAParams, SatisfactionParams, TrainParams,
                                  UpdateParams)
from policies.easq.policy import EASQ, OBJECTIVES, VARIANTS, UpdateStats
from policies.easq.windows import EASQ_COLUMNS

__all__ = ["DENSE_TASKS", "EASQ", "EASQ_COLUMNS", "OBJECTIVES", "VARIANTS", "AlignParams", "EASQConfig", "EASQNet",
           "EncoderParams", "LoRAEmbedding", "LoRALinear", "LoRAParams", "SatisfactionParams", "TrainParams",
           "UpdateParams", "UpdateStats", "dense_loss", "dpo_loss"]
