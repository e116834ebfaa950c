"""Triggers of the Genesys Cloud LLM Gateway provider (they carry connection ids, never credentials)."""

from .conversation_job import ConversationJobWatch, GenesysConversationJobTrigger
from .gateway import GatewayCheck, GatewayReadiness, GenesysLLMGatewayTrigger

__all__ = [
    "ConversationJobWatch",
    "GatewayCheck",
    "GatewayReadiness",
    "GenesysConversationJobTrigger",
    "GenesysLLMGatewayTrigger",
]
