"""Provider adapters: build the request, send one request, map the answer and the errors. Nothing more.

Retries, rate limits, validation and recording live one layer up, in `gen.teacher`, once for all providers.
"""
from __future__ import annotations

from gen.config import TeacherSpec
from gen.providers.base import Provider


def make_provider(spec: TeacherSpec) -> Provider:
    """The adapter for a teacher. Reads the key from the environment (MissingKeyError if unset)."""
    if spec.mode == "batch":  # the provider's batch API, through gen.batching (which sits above the store)
        from gen.batching.provider import BatchingProvider

        return BatchingProvider(spec)
    if spec.provider == "mistral":
        from gen.providers.mistral_provider import MistralProvider

        return MistralProvider(spec)
    from gen.providers.openai_provider import OpenAIProvider

    return OpenAIProvider(spec)
