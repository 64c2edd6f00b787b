"""lamina: RL for LLM agents on text environments, with layer-restricted updates."""

__version__ = "0.1.0"
