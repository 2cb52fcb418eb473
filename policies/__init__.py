"""Ranking policies: one protocol, one registry, baselines and the paper policies."""
from policies.base import (NotFittedError, Policy, UnknownPolicyError, available_policies, make_policy,
                           register_policy)
from policies import baselines, oracle, sasrec  # noqa: F401  (registers them)

__all__ = ["NotFittedError", "Policy", "UnknownPolicyError", "available_policies", "make_policy",
           "register_policy"]
