"""Mistral through the `mistralai` SDK's async client (`server_url` points it at another host)."""
from __future__ import annotations

import httpx2
from mistralai.client import Mistral, errors

from gen.config import RetryPolicy, TeacherSpec
from gen.errors import CallTimeout, MalformedResponse, Unreachable
from gen.providers.base import Provider, error_for_status
from gen.providers.openai_provider import http_client, refused
from gen.types import ChatRequest, Completion, Usage

_PARAM_NAMES = {"seed": "random_seed"}


class MistralProvider(Provider):
    name = "mistral"

    def __init__(self, spec: TeacherSpec):
        self.teacher = spec.name
        self.server_url = spec.base_url or None
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
                raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.server_url or 'api.mistral.ai'} "
                                  "(connection refused)") from None
            raise CallTimeout(f"teacher '{self.teacher}': no answer within {request.timeout:g}s") from None
        except (httpx2.ConnectError, httpx2.NetworkError, errors.NoResponseError) as exc:
            raise Unreachable(f"teacher '{self.teacher}': cannot connect to {self.server_url or 'api.mistral.ai'} "
                              f"({exc.__class__.__name__})") from None
        except errors.ResponseValidationError as exc:
            raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body", status=exc.status_code,
                                    raw=(exc.body or "")[:2000]) from None
        except errors.MistralError as exc:
            if 200 <= exc.status_code < 300:
                raise MalformedResponse(f"teacher '{self.teacher}': unreadable response body",
                                        status=exc.status_code, raw=(exc.body or "")[:2000]) from None
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
            text=content or "",
            finish_reason=str(choice.finish_reason) if choice.finish_reason is not None else None,
            usage=Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0),
            status=200,
            model=body.model,
        )

    async def aclose(self) -> None:
        await self.http.aclose()  # the SDK leaves a client it was given open
