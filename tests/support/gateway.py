"""A publisher that records what the gateway publishes (or fails like a broker that is down)."""

from __future__ import annotations


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.down = False

    def __call__(self, task: str, job_id: int, queue: str, model: str | None = None) -> str:
        if self.down:
            raise ConnectionError("broker down")
        assert task == "medseg.run_job"
        self.sent.append((job_id, queue))
        return f"task-{job_id}"
