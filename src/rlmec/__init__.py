"""rlmec: reward-as-a-service for fine-grained RL of LLMs (RLMEC method)."""

__version__ = "0.1.0"
