"""SINE: sub-interest learning with passive-negative feedback (Pan et al., RecSys 2023, Sec. 4).

``model`` holds the networks, ``windows`` the training data built from logs, ``params`` the
hyperparameter groups and the paper's rows (VARIANTS), ``policy`` the registered ``sine`` policy.
The design, and every choice the paper leaves open: docs/notes/sine.md.
"""
from policies.sine.model import (BETA_SCALE, SKIP_SCALE_INIT, FeedbackItemEmbedding, SINEConfig, SINEModel, bpr,
                                 distance_correlation, prototype_dcor)
from policies.sine.params import METRICS, VARIANTS, EncoderParams, InterestParams, LossParams, TrainParams
from policies.sine.policy import SINE, skip_gauc
from policies.sine.windows import (Examples, Paged, Validation, Windows, holdout_tail, mixed_windows,
                                   next_click_after, tokens_of)

__all__ = ["BETA_SCALE", "METRICS", "SINE", "SKIP_SCALE_INIT", "VARIANTS", "EncoderParams", "Examples",
           "FeedbackItemEmbedding", "InterestParams", "LossParams", "Paged", "SINEConfig", "SINEModel", "TrainParams",
           "Validation", "Windows", "bpr", "distance_correlation", "holdout_tail", "mixed_windows", "next_click_after",
           "prototype_dcor", "skip_gauc", "tokens_of"]
