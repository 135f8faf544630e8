"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) through the `openai` SDK's async client."""
from __future__ import annotations


import json

import aiohttp
import httpx2
import openai

from gen.config import RetryPolicy, TeacherSpec
from gen.errors import CallTimeout, MalformedResponse, Unreachable
from gen.providers import tls
from gen.providers.base import Provider, error_for_status
from gen.secrets import redact_url, scrub
from gen.types import ChatRequest, Completion, Usage


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, spec: TeacherSpec):
        self.teacher = spec.name
        self.shown_url = redact_url(spec.base_url or "https://api.openai.com/v1")
        # gen retries and rate-limits one layer up (gen.config.RetryPolicy): the SDK's own retries are off so the
        # two don't multiply, and its timeout is the policy's.
        self.client = openai.AsyncOpenAI(
            api_key=spec.api_key(), base_url=spec.base_url or None, max_retries=0,
            timeout=RetryPolicy.of(spec).call_timeout,
            http_client=http_client(spec),
        )

    async def complete(self, request: ChatRequest) -> Completion:
        body = {"model": request.model, "messages": request.messages, **request.params}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        try:
            # The SDK's low-level `post`: its client, auth, transport and error classes, without the per-call
            # TypedDict transform and pydantic models of `chat.completions.create` (most of its CPU per call);
            # gen reads the four fields it needs from the JSON itself.
            raw = await self.client.post("/chat/completions", cast_to=httpx2.Response, body=body,
                                         options={"timeout": request.timeout})
        except openai.APITimeoutError as exc:
            if refused(exc):  # the aiohttp transport reports a refused connection as a connect timeout
                raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.shown_url} "
                                  "(connection refused)") from None
            raise CallTimeout(f"teacher '{self.teacher}': no answer within {request.timeout:g}s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.shown_url} "
                              f"({cause.__class__.__name__})") from None
        except openai.APIStatusError as exc:
            raise error_for_status(exc.status_code, exc.response.text, exc.response.headers,
                                   teacher=self.teacher) from None
        try:
            text = await raw.aread()
        except Exception as exc:  # the connection broke while the body was arriving
            raise MalformedResponse(f"teacher '{self.teacher}': body cut off ({exc.__class__.__name__})",
                                    status=raw.status_code) from None
        return parse_chat_completion(text, status=raw.status_code, headers=dict(raw.headers), teacher=self.teacher)

    async def aclose(self) -> None:
        await self.client.close()


def refused(exc: BaseException) -> bool:
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def parse_chat_completion(body: bytes, *, status: int, headers: dict[str, str], teacher: str) -> Completion:
    """The fields gen needs from a chat-completions body; anything else is a MalformedResponse."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not text")
        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"teacher '{teacher}': unreadable response body ({exc.__class__.__name__})",
                                status=status, raw=scrub(body[:2000].decode("utf-8", "replace"))) from None
    return Completion(text=scrub(content), finish_reason=choice.get("finish_reason"),
                      usage=Usage(prompt_tokens, completion_tokens), status=status, headers=headers,
                      model=data.get("model"))




def http_client(spec: TeacherSpec):
    """The SDK's aiohttp transport: httpcore's pool scans every pooled connection on each request (a socket
    probe each), which dominates CPU at hundreds of calls in flight; aiohttp's pool does not. It verifies
    servers with the process's TLS context (gen.providers.tls), the one it would otherwise build for itself."""
    return openai.DefaultAioHttpClient(timeout=RetryPolicy.of(spec).call_timeout, verify=tls.context())
