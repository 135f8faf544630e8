"""The Celery driver: workers that run gen units from a Redis queue, on the same execution core as `gen run`."""
