"""mtbi: multi-task behavior imitation recipes for speech large language models."""

__version__ = "0.1.0"
