"""The rollout actor of the online loop (``rlmec rollout``): the policy generates solutions
with behaviour log-probs, pushes them to the reward service's queue, and follows the weights
the trainer publishes. Imports ``shared``, ``inference``, ``data`` and ``clients``."""
