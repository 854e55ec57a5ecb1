"""Releases: traffic routing across versions, observations, and the rollout controller."""
