"""The providers' batch APIs behind one interface, through their own SDKs.

OpenAI (and OpenAI-compatible servers): JSONL lines {custom_id, method, url, body}, `files.create(purpose="batch")`,
`batches.create(..., completion_window="24h")`, `batches.retrieve`, output and error files, `batches.cancel`.
Mistral: lines {custom_id, body}, `files.upload(purpose="batch")`, `batch.jobs.create(input_files, model,
endpoint)`, `batch.jobs.get`, `files.download`, `batch.jobs.cancel`.

Every batch gen creates carries its submission marker in its metadata (`{"gen_submission": <uuid>}`, also in the
input file's name), so a batch whose creation was never recorded (the process died waiting for the answer) is
found again by listing the provider's batches (`batches.list`, `batch.jobs.list`) instead of being sent twice.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gen.config import TeacherSpec
from gen.errors import TeacherError

ENDPOINT = "/v1/chat/completions"
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_REQUESTS = 50_000
MARKER_KEY = "gen_submission"
LIST_SLACK = timedelta(minutes=10)  # clocks differ: a batch is looked for among those created this much earlier too


@dataclass(frozen=True)
class BatchState:
    """A batch as the provider reports it. `finished`: no more answers will come (completed, failed, expired,
    cancelled); `output_file` / `error_file`: where its lines are."""

    status: str
    finished: bool
    output_file: str | None = None
    error_file: str | None = None
    total: int = 0
    done: int = 0


class BatchAPI(ABC):
    name: str
    max_requests: int = MAX_FILE_REQUESTS
    max_bytes: int = MAX_FILE_BYTES

    @abstractmethod
    def line(self, custom_id: str, body: dict[str, Any]) -> bytes: ...

    @abstractmethod
    async def submit(self, lines: list[bytes], marker: str) -> str:
        """Upload one input file and create its batch, marked with `marker`; the provider's batch id."""

    @abstractmethod
    async def find(self, marker: str, since: datetime) -> str | None:
        """The id of the batch created with `marker` (at or after `since`), or None when the provider has none."""

    @abstractmethod
    async def retrieve(self, batch_id: str) -> BatchState: ...

    @abstractmethod
    async def download(self, file_id: str) -> bytes: ...

    @abstractmethod
    async def cancel(self, batch_id: str) -> None: ...

    async def aclose(self) -> None:
        return None


def parse_result_lines(data: bytes) -> dict[str, tuple[bool, str]]:
    """custom_id -> (True, the chat-completion body as JSON text) or (False, why it failed)."""
    results: dict[str, tuple[bool, str]] = {}
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            custom_id = str(item["custom_id"])
        except (ValueError, KeyError, TypeError):
            continue
        response = item.get("response") or {}
        status = response.get("status_code")
        if item.get("error") or status != 200:
            error = item.get("error") or (response.get("body") or {}).get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            results[custom_id] = (False, f"failed inside the batch (status {status}): {message or 'no reason given'}")
        else:
            results[custom_id] = (True, json.dumps(response.get("body")))
    return results


class OpenAIBatchAPI(BatchAPI):
    name = "openai"

    def __init__(self, spec: TeacherSpec):
        import openai

        self.teacher = spec.name
        self.client = openai.AsyncOpenAI(api_key=spec.api_key(), base_url=spec.base_url or None, max_retries=2,
                                         timeout=spec.timeout)

    def line(self, custom_id: str, body: dict[str, Any]) -> bytes:
        return (json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}) + "\n").encode()

    async def submit(self, lines: list[bytes], marker: str) -> str:
        with SdkErrors(self.teacher):
            uploaded = await self.client.files.create(file=(f"gen-{marker}.jsonl", b"".join(lines)), purpose="batch")
            batch = await self.client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT,
                                                     completion_window="24h", metadata={MARKER_KEY: marker})
        return batch.id

    async def find(self, marker: str, since: datetime) -> str | None:
        oldest = (_aware(since) - LIST_SLACK).timestamp()
        with SdkErrors(self.teacher):
            async for batch in self.client.batches.list(limit=100):  # newest first, page after page
                if (batch.metadata or {}).get(MARKER_KEY) == marker:
                    return batch.id
                if batch.created_at < oldest:
                    return None
        return None

    async def retrieve(self, batch_id: str) -> BatchState:
        with SdkErrors(self.teacher):
            batch = await self.client.batches.retrieve(batch_id)
        counts = batch.request_counts
        return BatchState(batch.status, batch.status in ("completed", "failed", "expired", "cancelled"),
                          batch.output_file_id, batch.error_file_id, counts.total if counts else 0,
                          (counts.completed + counts.failed) if counts else 0)

    async def download(self, file_id: str) -> bytes:
        with SdkErrors(self.teacher):
            content = await self.client.files.content(file_id)
        return content.content

    async def cancel(self, batch_id: str) -> None:
        with SdkErrors(self.teacher):
            await self.client.batches.cancel(batch_id)

    async def aclose(self) -> None:
        await self.client.close()


class MistralBatchAPI(BatchAPI):
    name = "mistral"

    def __init__(self, spec: TeacherSpec):
        from mistralai.client import Mistral

        self.teacher = spec.name
        self.model = spec.model
        self.client = Mistral(api_key=spec.api_key(), server_url=(spec.base_url or "https://api.mistral.ai"),
                              timeout_ms=int(spec.timeout * 1000))

    def line(self, custom_id: str, body: dict[str, Any]) -> bytes:
        body = {k: v for k, v in body.items() if k != "model"}  # one model per Mistral batch job
        return (json.dumps({"custom_id": custom_id, "body": body}) + "\n").encode()

    async def submit(self, lines: list[bytes], marker: str) -> str:
        with SdkErrors(self.teacher):
            uploaded = await self.client.files.upload_async(
                file={"file_name": f"gen-{marker}.jsonl", "content": b"".join(lines)}, purpose="batch")
            job = await self.client.batch.jobs.create_async(input_files=[uploaded.id], model=self.model,
                                                            endpoint=ENDPOINT, metadata={MARKER_KEY: marker})
        return job.id

    async def find(self, marker: str, since: datetime) -> str | None:
        page, size = 0, 100
        with SdkErrors(self.teacher):
            while True:
                listed = await self.client.batch.jobs.list_async(page=page, page_size=size, model=self.model,
                                                                 created_after=_aware(since) - LIST_SLACK)
                jobs = listed.data or []
                for job in jobs:
                    if (job.metadata or {}).get(MARKER_KEY) == marker:
                        return job.id
                if len(jobs) < size:
                    return None
                page += 1

    async def retrieve(self, batch_id: str) -> BatchState:
        with SdkErrors(self.teacher):
            job = await self.client.batch.jobs.get_async(job_id=batch_id)
        status = str(job.status)
        return BatchState(status, status in ("SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"),
                          job.output_file or None, job.error_file or None, job.total_requests,
                          job.completed_requests)

    async def download(self, file_id: str) -> bytes:
        with SdkErrors(self.teacher):
            response = await self.client.files.download_async(file_id=file_id)
            return await response.aread()

    async def cancel(self, batch_id: str) -> None:
        with SdkErrors(self.teacher):
            await self.client.batch.jobs.cancel_async(job_id=batch_id)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite gives naive UTC


def make_batch_api(spec: TeacherSpec) -> BatchAPI:
    return MistralBatchAPI(spec) if spec.provider == "mistral" else OpenAIBatchAPI(spec)


class SdkErrors:
    """Around an SDK call: its failures become gen's retryable TeacherError, never with a key in the message."""

    def __init__(self, teacher: str):
        self.teacher = teacher

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _tb) -> bool:  # noqa: ANN001
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, TeacherError):
            return False
        status = getattr(exc, "status_code", None)
        raise TeacherError(f"teacher '{self.teacher}': batch API call failed ({type(exc).__name__}"
                           + (f", HTTP {status}" if status else "") + ")", status=status) from None
