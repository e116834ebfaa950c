"""Triggers of the Genesys Cloud LLM Gateway provider."""

from .gateway import GatewayReadiness, GenesysLLMGatewayTrigger

__all__ = ["GatewayReadiness", "GenesysLLMGatewayTrigger"]
