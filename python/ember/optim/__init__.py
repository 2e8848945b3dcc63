"""Optimizers: APOLLO and APOLLO-Mini with fused kernels and a projection that is never stored."""

from .apollo import Apollo, ApolloMini, apollo_param_groups

__all__ = ["Apollo", "ApolloMini", "apollo_param_groups"]
