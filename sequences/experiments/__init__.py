"""Experiments: A/B tests of a store's recovery sequence against a holdout.

- ``stats``: always-valid intervals (confidence sequences) and the planner.
"""
