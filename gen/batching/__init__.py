"""`mode: batch` teachers: requests gathered from every waiting unit into provider batch files, answered by
`custom_id`, kept in the database so a crash never sends a paid request twice.

- `scope`: which job and unit a request belongs to (set by the unit's journal around each exchange).
- `apis`: the OpenAI and Mistral batch APIs behind one small interface (upload+create, retrieve, download, cancel).
- `provider`: `BatchingProvider`, a `gen.providers.base.Provider` whose `complete()` records a request and waits.
- `fleet`: one process's part for a (job, teacher): submit (one lease holder in the fleet), poll, collect.
- `report`: batches in flight for `gen status`, and cancelling a job's batches for `gen cancel`.
"""
