"""Sensors of the Genesys Cloud LLM Gateway provider."""

from .conversation_job import GenesysConversationJobSensor
from .gateway import GenesysLLMGatewaySensor

__all__ = ["GenesysConversationJobSensor", "GenesysLLMGatewaySensor"]
