"""Celery's message strategy for gen's task, guarded: a message whose body Celery cannot even unpack (valid JSON
that is not the `[args, kwargs, embed]` triple) is dead-lettered and acknowledged instead of raising inside the
consumer, which stops the worker, restores the message, and kills the next worker that takes it too."""
from __future__ import annotations

from celery.worker.strategy import default

from worker.deadletter import dead_letter


def guarded(task, app, consumer, **kwargs):  # noqa: ANN001 (Celery's strategy signature)
    handle = default(task, app, consumer, **kwargs)

    def task_message_handler(message, body, ack, reject, callbacks, **kw):  # noqa: ANN001
        try:
            return handle(message, body, ack, reject, callbacks, **kw)
        except Exception as exc:
            dead_letter(f"malformed {task.name} message ({type(exc).__name__}: {exc})",
                        getattr(message, "body", body))
            try:
                message.ack()
            except Exception:  # already acknowledged or the connection is gone: nothing more to do
                pass
            return None

    return task_message_handler
