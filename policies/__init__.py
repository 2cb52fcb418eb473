"""Ranking policies: one protocol, one registry, baselines and the paper policies."""
from policies.base import (NotFittedError, Policy, UnknownPolicyError, available_policies, is_oracle, make_policy,
                           policy_class, register_policy)
# importing a policy module registers its policies
from policies import baselines, oracle, sasrec  # noqa: F401
from policies import easq, gym_adapter, saqrec, sine, usm  # noqa: F401

__all__ = ["NotFittedError", "Policy", "UnknownPolicyError", "available_policies", "is_oracle", "make_policy",
           "policy_class", "register_policy"]
