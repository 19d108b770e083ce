"""Experiments: A/B tests of a store's recovery sequence against a holdout.

- ``stats``: always-valid intervals (confidence sequences) and the planner.
- ``assignment``: which arm a cart is in (a keyed hash per shopper, recorded when the cart
  becomes eligible) and the settings that arm gives it; the engine asks it.
- ``manage``: starting and stopping a store's experiment, its arms validated.
"""
