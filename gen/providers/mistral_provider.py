"""Mistral through the `mistralai` SDK's async client (`server_url` points it at another host)."""
from __future__ import annotations

import logging

import httpx2
from mistralai.client import Mistral, errors

from gen.config import RetryPolicy, TeacherSpec
from gen.errors import CallTimeout, MalformedResponse, Unreachable
from gen.providers.base import Provider, error_for_status
from gen.providers.openai_provider import http_client, refused
from gen.secrets import redact_url, scrub
from gen.types import ChatRequest, Completion, Usage

_PARAM_NAMES = {"seed": "random_seed"}
log = logging.getLogger("gen.providers.mistral")
_warned: set[str] = set()


def server_root(base_url: str | None, *, teacher: str) -> str | None:
    """The SDK's `server_url` is the host root: it appends `/v1/chat/completions` itself, so a `base_url`
    written as `https://host/v1` (as for OpenAI-compatible servers) would get 404 on every call. The `/v1`
    is dropped, and said once per teacher."""
    if not base_url:
        return None
    stripped = base_url.rstrip("/")
    if stripped.endswith("/v1"):
        stripped = stripped[: -len("/v1")]
        if teacher not in _warned:
            _warned.add(teacher)
            log.warning("teacher '%s': base_url %s ends in /v1, which the Mistral SDK adds itself: using %s",
                        teacher, redact_url(base_url), redact_url(stripped))
    return stripped


class MistralProvider(Provider):
    name = "mistral"

    def __init__(self, spec: TeacherSpec):
        self.teacher = spec.name
        self.server_url = server_root(spec.base_url, teacher=spec.name)
        self.shown_url = redact_url(self.server_url or "https://api.mistral.ai")
        # No retry_config: the SDK does not retry unless asked; gen retries one layer up (gen.config.RetryPolicy).
        self.http = http_client(spec)
        self.client = Mistral(api_key=spec.api_key(), server_url=self.server_url,
                              timeout_ms=int(RetryPolicy.of(spec).call_timeout * 1000), async_client=self.http)

    async def complete(self, request: ChatRequest) -> Completion:
        kwargs = {_PARAM_NAMES.get(k, k): v for k, v in request.params.items()}
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        try:
            body = await self.client.chat.complete_async(
                model=request.model, messages=request.messages, timeout_ms=int(request.timeout * 1000), **kwargs,
            )
        except httpx2.TimeoutException as exc:
            if refused(exc):  # the aiohttp transport reports a refused connection as a connect timeout
                raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.shown_url} "
                                  "(connection refused)") from None
            raise CallTimeout(f"teacher '{self.teacher}': no answer within {request.timeout:g}s") from None
        except (httpx2.ConnectError, httpx2.NetworkError, errors.NoResponseError) as exc:
            raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.shown_url} "
                              f"({exc.__class__.__name__})") from None
        except errors.ResponseValidationError as exc:
            raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body", status=exc.status_code,
                                    raw=scrub((exc.body or "")[:2000])) from None
        except errors.MistralError as exc:
            if 200 <= exc.status_code < 300:
                raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body",
                                        status=exc.status_code, raw=scrub((exc.body or "")[:2000])) from None
            raise error_for_status(exc.status_code, exc.body, exc.headers, teacher=self.teacher) from None
        except ValueError as exc:  # JSON decoding of a malformed body
            raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body ({exc.__class__.__name__})",
                                    status=200) from None
        try:
            choice = body.choices[0]
            content = choice.message.content
            if isinstance(content, list):  # content chunks
                content = "".join(getattr(part, "text", "") or "" for part in content)
            usage = body.usage
            usage.prompt_tokens  # noqa: B018 - a body without usage is malformed
        except (IndexError, AttributeError, TypeError):
            raise MalformedResponse(f"teacher '{self.teacher}': response has no choices or usage", status=200) from None
        return Completion(
            text=scrub(content or ""),  # an answer quoting a key (a proxy echoing headers) is scrubbed too
            finish_reason=str(choice.finish_reason) if choice.finish_reason is not None else None,
            usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0),
            status=200,
            model=body.model,
        )

    async def aclose(self) -> None:
        await self.http.aclose()  # the SDK leaves a client it was given open
