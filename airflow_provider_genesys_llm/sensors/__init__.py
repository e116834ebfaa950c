"""Sensors of the Genesys Cloud LLM Gateway provider."""

from .gateway import GenesysLLMGatewaySensor

__all__ = ["GenesysLLMGatewaySensor"]
