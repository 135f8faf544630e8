"""The execution core: one way to run a unit, shared by both drivers (`gen run` and the Celery worker)."""
