"""Adapters for RL frameworks: OpenRLHF (remote reward URL or reward-function file), TRL
(GRPOTrainer reward function) and veRL (``compute_score``). Each imports only the SDK."""
