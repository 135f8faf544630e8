"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through the `openai` SDK's async client."""
from __future__ import annotations


import openai

from gen.config import TeacherSpec
from gen.errors import CallTimeout, MalformedResponse, Unreachable
from gen.providers.base import Provider, error_for_status
from gen.types import ChatRequest, Completion, Usage


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, spec: TeacherSpec):
        self.teacher = spec.name
        # gen retries and rate-limits one layer up: the SDK's own retries are off so the two don't multiply.
        self.client = openai.AsyncOpenAI(
            api_key=spec.api_key(), base_url=spec.base_url or None, max_retries=0, timeout=spec.timeout,
        )

    async def complete(self, request: ChatRequest) -> Completion:
        kwargs = dict(request.params)
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=request.model, messages=request.messages, timeout=request.timeout, **kwargs,
            )
        except openai.APITimeoutError:
            raise CallTimeout(f"teacher '{self.teacher}': no answer within {request.timeout:g}s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.client.base_url} "
                              f"({cause.__class__.__name__})") from None
        except openai.APIStatusError as exc:
            raise error_for_status(exc.status_code, exc.response.text, exc.response.headers,
                                   teacher=self.teacher) from None
        headers = dict(raw.headers)
        try:
            body = raw.parse()
            choice = body.choices[0]
            text = choice.message.content or ""
            usage = body.usage
        except Exception as exc:  # the SDK raises several types for a body it cannot read
            raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body "
                                    f"({exc.__class__.__name__})", status=raw.status_code,
                                    raw=_safe_text(raw)) from None
        return Completion(
            text=text,
            finish_reason=choice.finish_reason,
            usage=Usage(usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0),
            status=raw.status_code,
            headers=headers,
            model=getattr(body, "model", None),
        )

    async def aclose(self) -> None:
        await self.client.close()


def _safe_text(raw) -> str | None:
    try:
        return raw.http_response.text[:2000]
    except Exception:
        return None


