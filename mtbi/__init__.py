"""mtbi: multi-task behavior imitation recipes for speech large language models.

``from mtbi import SpeechLLM`` (:class:`mtbi.pretrained.SpeechLLM`) loads a trained model to ask
it about audio; it is imported on first use, so that ``import mtbi`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SpeechLLM", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "SpeechLLM":
        from mtbi.pretrained import SpeechLLM

        return SpeechLLM
    raise AttributeError(f"module 'mtbi' has no attribute '{name}'")
