"""Transports: each turns one ``CompletionRequest`` attempt into a stream of token texts."""
