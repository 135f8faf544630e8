"""The simulator's batch APIs: OpenAI's files + batches and Mistral's files + batch jobs.

Both upload JSONL through ``POST /v1/files`` (multipart, purpose ``batch``) and download results through
``GET /v1/files/{id}/content``. A batch is answered by the same content engine as the online
chat-completions endpoint, once its completion delay has passed (checked when the batch is retrieved), with
output lines shuffled (providers do not keep input order) and a configurable share of requests failing into
the error file. Limits (requests and bytes per file) refuse larger input, as the providers do.

Batches are listed newest first (``GET /v1/batches`` with ``after``/``limit``; ``GET /v1/batch/jobs`` with
``page``/``page_size``/``model``/``created_after``), with the ``metadata`` they were created with.

Live settings: ``GET/POST /sim/batch/config`` (delay, failure_rate, max_requests, max_bytes, create_hold: seconds
the create handlers wait after creating a batch before answering, to kill a client inside that window).
Counters (in ``/sim/stats`` under ``batch``): requests per endpoint, batches created, requests in batches,
repeated_requests (requests whose body an earlier batch already held).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimulatorState

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024


@dataclass
class BatchSettings:
    """delay: seconds from creation until a batch is complete; failure_rate: share of requests that fail
    (error file); max_requests / max_bytes: the per-file limits; create_hold: seconds a create request waits,
    its batch already created, before it is answered."""

    delay: float = 0.2
    failure_rate: float = 0.0
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    create_hold: float = 0.0

    def patch(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown batch setting: {name!r}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
            if name == "failure_rate" and value > 1:
                raise ValueError("failure_rate must be between 0 and 1")
        for name, value in changes.items():
            setattr(self, name, value)


def new_batch_stats() -> dict[str, Any]:
    return {"endpoints": {}, "batches_created": 0, "requests_in_batches": 0, "batches_cancelled": 0,
            "repeated_requests": 0}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": None}, "message": message}, status=status)


class BatchBackend:
    """Files and batches of one running simulator (both APIs)."""

    def __init__(self, state: "SimulatorState", answer) -> None:  # noqa: ANN001 - answer(body) -> dict
        self.state = state
        self.answer = answer
        self.settings = BatchSettings()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.bodies_seen: set[str] = set()

    # -- bookkeeping -------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        return self.state.stats.setdefault("batch", new_batch_stats())

    def _count(self, endpoint: str) -> None:
        endpoints = self.stats["endpoints"]
        endpoints[endpoint] = endpoints.get(endpoint, 0) + 1

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        meta = {"id": file_id, "object": "file", "bytes": len(data), "size_bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
                "sample_type": "batch_result" if purpose == "batch_output" else "batch_request",
                "source": "upload", "num_lines": data.count(b"\n")}
        self.files[file_id] = {"meta": meta, "data": data}
        return meta

    # -- files ---------------------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        self._count("POST /v1/files")
        form = await request.post()
        upload, purpose = form.get("file"), str(form.get("purpose") or "")
        if upload is None or not hasattr(upload, "file"):
            return _error(400, "'file' is required (multipart form)")
        data = upload.file.read()
        if len(data) > self.settings.max_bytes:
            return _error(400, f"file is {len(data)} bytes; the limit is {self.settings.max_bytes}")
        return web.json_response(self._store_file(data, upload.filename or "upload.jsonl", purpose))

    async def file_info(self, request: web.Request) -> web.Response:
        self._count("GET /v1/files/{id}")
        found = self.files.get(request.match_info["file_id"])
        return web.json_response(found["meta"]) if found else _error(404, "no such file")

    async def file_content(self, request: web.Request) -> web.Response:
        self._count("GET /v1/files/{id}/content")
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            return _error(404, "no such file")
        return web.Response(body=found["data"], content_type="application/octet-stream")

    # -- batches (both flavours share one record) ----------------------------------------------------------
    def _create(self, input_file_id: str, *, flavour: str, endpoint: str, model: str | None,
                metadata: Any) -> tuple[dict[str, Any] | None, web.Response | None]:
        found = self.files.get(input_file_id)
        if found is None:
            return None, _error(404, f"no such file: {input_file_id}")
        lines = [line for line in found["data"].splitlines() if line.strip()]
        if len(lines) > self.settings.max_requests:
            return None, _error(400, f"the input file has {len(lines)} requests; the limit is "
                                     f"{self.settings.max_requests}")
        requests = []
        for n, line in enumerate(lines):
            try:
                item = json.loads(line)
                requests.append((str(item["custom_id"]), item["body"]))
            except (ValueError, KeyError, TypeError):
                return None, _error(400, f"line {n + 1} of the input file is not a batch request")
        if len({cid for cid, _ in requests}) != len(requests):
            return None, _error(400, "custom_id values must be unique within a batch")
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        now = time.time()
        batch = {"id": batch_id, "flavour": flavour, "endpoint": endpoint, "model": model, "metadata": metadata,
                 "input_file_id": input_file_id, "requests": requests, "created": now,
                 "due": now + self.settings.delay, "status": "in_progress", "output_file_id": None,
                 "error_file_id": None, "completed": 0, "failed": 0, "finished_at": None, "cancelled_at": None}
        self.batches[batch_id] = batch
        self.stats["batches_created"] += 1
        self.stats["requests_in_batches"] += len(requests)
        for _, body in requests:
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            self.stats["repeated_requests"] += digest in self.bodies_seen
            self.bodies_seen.add(digest)
        return batch, None

    async def _hold(self) -> None:
        if self.settings.create_hold:
            await asyncio.sleep(self.settings.create_hold)

    def _newest_first(self) -> list[dict[str, Any]]:
        return sorted(self.batches.values(), key=lambda b: b["created"], reverse=True)

    def _advance(self, batch: dict[str, Any]) -> None:
        """Answer a batch whose delay has passed: output and error files, shuffled lines."""
        if batch["status"] != "in_progress" or time.time() < batch["due"]:
            return
        rng = self.state.rng
        outputs, errors = [], []
        for custom_id, body in batch["requests"]:
            line_id = f"batch_req_{uuid.uuid4().hex[:16]}"
            if isinstance(body, dict) and batch["model"] and "model" not in body:
                body = {**body, "model": batch["model"]}
            if rng.random() < self.settings.failure_rate:
                errors.append({"id": line_id, "custom_id": custom_id, "response": {
                    "status_code": 500, "request_id": line_id, "body": {"error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error"}}}, "error": None})
                continue
            status, payload = self.answer(body)
            line = {"id": line_id, "custom_id": custom_id,
                    "response": {"status_code": status, "request_id": line_id, "body": payload}, "error": None}
            (outputs if status == 200 else errors).append(line)
        rng.shuffle(outputs)
        batch["completed"], batch["failed"] = len(outputs), len(errors)
        if outputs:
            data = "".join(json.dumps(line) + "\n" for line in outputs).encode()
            batch["output_file_id"] = self._store_file(data, f"{batch['id']}_output.jsonl", "batch_output")["id"]
        if errors:
            data = "".join(json.dumps(line) + "\n" for line in errors).encode()
            batch["error_file_id"] = self._store_file(data, f"{batch['id']}_error.jsonl", "batch_output")["id"]
        batch["status"], batch["finished_at"] = "completed", time.time()

    def _cancel(self, batch: dict[str, Any]) -> None:
        if batch["status"] == "in_progress":
            batch["status"], batch["cancelled_at"] = "cancelled", time.time()
            self.stats["batches_cancelled"] += 1

    # -- OpenAI shapes -------------------------------------------------------------------------------------
    def _openai(self, batch: dict[str, Any]) -> dict[str, Any]:
        ts = lambda v: int(v) if v else None  # noqa: E731
        return {
            "id": batch["id"], "object": "batch", "endpoint": batch["endpoint"], "errors": None,
            "input_file_id": batch["input_file_id"], "completion_window": "24h", "status": batch["status"],
            "output_file_id": batch["output_file_id"], "error_file_id": batch["error_file_id"],
            "created_at": int(batch["created"]), "in_progress_at": int(batch["created"]),
            "expires_at": int(batch["created"]) + 86400, "completed_at": ts(batch["finished_at"]),
            "cancelled_at": ts(batch["cancelled_at"]),
            "request_counts": {"total": len(batch["requests"]), "completed": batch["completed"],
                               "failed": batch["failed"]},
            "metadata": batch["metadata"],
        }

    async def openai_create(self, request: web.Request) -> web.Response:
        self._count("POST /v1/batches")
        body = await request.json()
        batch, error = self._create(str(body.get("input_file_id")), flavour="openai",
                                    endpoint=body.get("endpoint") or "/v1/chat/completions", model=None,
                                    metadata=body.get("metadata"))
        if error:
            return error
        await self._hold()
        return web.json_response(self._openai(batch))

    async def openai_list(self, request: web.Request) -> web.Response:
        self._count("GET /v1/batches")
        listed = [b for b in self._newest_first() if b["flavour"] == "openai"]
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in listed]
            listed = listed[ids.index(after) + 1:] if after in ids else []
        limit = max(1, min(100, int(request.query.get("limit") or 20)))
        page = [self._openai(b) for b in listed[:limit]]
        return web.json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(listed) > limit})

    async def openai_get(self, request: web.Request) -> web.Response:
        self._count("GET /v1/batches/{id}")
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        self._advance(batch)
        return web.json_response(self._openai(batch))

    async def openai_cancel(self, request: web.Request) -> web.Response:
        self._count("POST /v1/batches/{id}/cancel")
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch")
        self._cancel(batch)
        return web.json_response(self._openai(batch))

    # -- Mistral shapes ------------------------------------------------------------------------------------
    def _mistral(self, batch: dict[str, Any]) -> dict[str, Any]:
        status = {"in_progress": "RUNNING", "completed": "SUCCESS", "cancelled": "CANCELLED"}[batch["status"]]
        return {
            "id": batch["id"], "object": "batch", "input_files": [batch["input_file_id"]],
            "endpoint": batch["endpoint"], "model": batch["model"], "errors": [], "status": status,
            "created_at": int(batch["created"]), "total_requests": len(batch["requests"]),
            "completed_requests": batch["completed"] + batch["failed"], "succeeded_requests": batch["completed"],
            "failed_requests": batch["failed"], "output_file": batch["output_file_id"],
            "error_file": batch["error_file_id"], "started_at": int(batch["created"]),
            "completed_at": int(batch["finished_at"]) if batch["finished_at"] else None,
            "metadata": batch["metadata"],
        }

    async def mistral_create(self, request: web.Request) -> web.Response:
        self._count("POST /v1/batch/jobs")
        body = await request.json()
        files = body.get("input_files") or []
        if len(files) != 1:
            return _error(400, "the simulator takes exactly one input file per batch job")
        batch, error = self._create(str(files[0]), flavour="mistral", endpoint=body.get("endpoint") or "",
                                    model=body.get("model"), metadata=body.get("metadata"))
        if error:
            return error
        await self._hold()
        return web.json_response(self._mistral(batch))

    async def mistral_list(self, request: web.Request) -> web.Response:
        self._count("GET /v1/batch/jobs")
        query = request.query
        listed = [b for b in self._newest_first() if b["flavour"] == "mistral"]
        if query.get("model"):
            listed = [b for b in listed if b["model"] == query["model"]]
        if query.get("created_after"):
            try:
                since = datetime.fromisoformat(query["created_after"].replace("Z", "+00:00")).timestamp()
            except ValueError:
                return _error(400, f"created_after is not a date: {query['created_after']!r}")
            listed = [b for b in listed if b["created"] >= since]
        page, size = int(query.get("page") or 0), max(1, min(100, int(query.get("page_size") or 100)))
        data = [self._mistral(b) for b in listed[page * size:(page + 1) * size]]
        return web.json_response({"object": "list", "data": data, "total": len(listed)})

    async def mistral_get(self, request: web.Request) -> web.Response:
        self._count("GET /v1/batch/jobs/{id}")
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch job")
        self._advance(batch)
        return web.json_response(self._mistral(batch))

    async def mistral_cancel(self, request: web.Request) -> web.Response:
        self._count("POST /v1/batch/jobs/{id}/cancel")
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "no such batch job")
        self._cancel(batch)
        return web.json_response(self._mistral(batch))

    # -- settings ------------------------------------------------------------------------------------------
    async def get_settings(self, _request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self.settings))

    async def set_settings(self, request: web.Request) -> web.Response:
        try:
            patch = json.loads(await request.read())
            if not isinstance(patch, dict):
                raise ValueError("batch settings must be a JSON object")
            self.settings.patch(patch)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return web.json_response(dataclasses.asdict(self.settings))

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self.upload)
        r.add_get("/v1/files/{file_id}", self.file_info)
        r.add_get("/v1/files/{file_id}/content", self.file_content)
        r.add_post("/v1/batches", self.openai_create)
        r.add_get("/v1/batches", self.openai_list)
        r.add_get("/v1/batches/{batch_id}", self.openai_get)
        r.add_post("/v1/batches/{batch_id}/cancel", self.openai_cancel)
        r.add_post("/v1/batch/jobs", self.mistral_create)
        r.add_get("/v1/batch/jobs", self.mistral_list)
        r.add_get("/v1/batch/jobs/{batch_id}", self.mistral_get)
        r.add_post("/v1/batch/jobs/{batch_id}/cancel", self.mistral_cancel)
        r.add_get("/sim/batch/config", self.get_settings)
        r.add_post("/sim/batch/config", self.set_settings)
