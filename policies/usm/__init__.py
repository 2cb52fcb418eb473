"""USM (Yu et al., 2024): an unbiased in-feed survey model fused into the ranking score (Eq. 3).

Read top to bottom: :mod:`~policies.usm.examples` (point-in-time features, survey labels, IPW
weights, Eq. 8's filter), :mod:`~policies.usm.model` (the network of Fig. 3 and its loss),
:mod:`~policies.usm.params` (the hyperparameter groups, Eq. 3's weights, the paper's variants),
:mod:`~policies.usm.policy` (the registered policy ``usm``: fit / update / score) and
:mod:`~policies.usm.metrics` (AUC and calibration on labelled samples, from :mod:`estimators`). The design, the choices
where the paper is silent and the measurements: docs/notes/usm.md.
"""
from policies.usm.examples import (DENSE, ENGAGEMENT_HEADS, HEAD_SURVEY, POSTERIOR, REQUIRED, SUBMIT_HEADS,
                                   SUBMIT_HISTORY, SURVEY_HEADS, Catalogue, Inputs, ipw_weights, logged_inputs,
                                   posterior_features, pseudo_label_mask, serving_inputs, submit_history,
                                   survey_labels)
from policies.usm.metrics import labelled_metrics
from policies.usm.model import LHUC, NetConfig, SqueezeExcite, SurveyNet, predict
from policies.usm.params import (DEFAULT_WEIGHTS, VARIANTS, DistillParams, NetworkParams, SubmitParams,
                                 TrainParams)
from policies.usm.policy import USM

__all__ = ["DEFAULT_WEIGHTS", "DENSE", "ENGAGEMENT_HEADS", "HEAD_SURVEY", "LHUC", "POSTERIOR", "REQUIRED",
           "SUBMIT_HEADS", "SUBMIT_HISTORY", "SURVEY_HEADS", "USM", "VARIANTS", "Catalogue", "DistillParams",
           "Inputs", "NetConfig", "NetworkParams", "SqueezeExcite", "SubmitParams", "SurveyNet", "TrainParams",
           "ipw_weights", "labelled_metrics", "logged_inputs", "posterior_features", "predict",
           "pseudo_label_mask", "serving_inputs", "submit_history", "survey_labels"]
