"""SDAR: Self-Distilled Agentic Reinforcement Learning."""
__version__ = "0.1.0"
