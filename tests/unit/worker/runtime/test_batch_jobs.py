"""Cross-series batching (worker.runtime.batch_jobs), run directly: no Celery, no eager mode.

Queued fetal head US jobs run as one batch give each job what it gets run alone (state,
measurements, SEG pixels, SR values, outputs valid); a job whose output or input fails fails
alone; the wait for more jobs is bounded (a fake clock); only queued jobs of the same model
and queue are taken."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Job, JobLogLine, JobState, utcnow
from db.session import make_engine, make_session_factory
from tests.support.jobs import add_job, queue_test_job, set_job
from tests.support.sr import sr_numbers
from tests.support.tools import dciodvfy_errors
from worker.core.registry import get_spec
from worker.core.settings import Settings
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.batching import Batching
from worker.pipeline.cache import ModelCache
from worker.runtime.batch_jobs import claim_mates, execute_batch
from worker.runtime.jobs import Claimed, claim, execute_job

HEAD = "fetal-head-unet"
#: One single-frame series, a three-frame cine, another single frame: 5 frames in all.
PHANTOMS = ((200101, 1), (200102, 3), (200103, 1))


@dataclass(frozen=True)
class Outcome:
    """What one job's run left: its state and attempts, its stored measurements, its SEG's
    pixels and its SR's numbers."""

    state: JobState
    attempts: int
    measurements: dict[str, float]
    seg: Any
    sr: dict[str, float]
    report_status: str


def _outcome(session_factory: sessionmaker[Session], job_id: int) -> Outcome:
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        (result,) = job.results
        measurements = {m.key: m.value for m in result.measurements}
        outputs = {o.kind: Path(o.path) for o in result.outputs}
        state, attempts = job.state, job.attempts
    for kind in ("seg", "sr"):
        assert dciodvfy_errors(outputs[kind]) == [], kind
    return Outcome(
        state=state,
        attempts=attempts,
        measurements=measurements,
        seg=pydicom.dcmread(outputs["seg"]).pixel_array,
        sr=sr_numbers(pydicom.dcmread(outputs["sr"])),
        report_status=json.loads(outputs["json"].read_text())["status"],
    )


def _database(root: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{root / 'medseg.db'}"
    upgrade(url)
    return make_session_factory(make_engine(url))


def _queue_us_jobs(session_factory: sessionmaker[Session], folder: Path) -> list[int]:
    """The phantoms of PHANTOMS queued as fetal head jobs, oldest first."""
    jobs = []
    for seed, frames in PHANTOMS:
        path = write_us_phantom(folder / f"us{seed}.dcm", seed, frames=frames).path
        job_id = queue_test_job(session_factory, [path])
        set_job(session_factory, job_id, model_name=HEAD, model_version="2.0.0")
        jobs.append(job_id)
    return jobs


def _queued_twice_first_run_alone(
    root: Path, models: ModelCache
) -> tuple[sessionmaker[Session], list[int], sessionmaker[Session], list[int]]:
    """The phantoms' jobs queued in two databases; those of the first run one by one.
    Returns (alone database, its jobs, batch database, its jobs)."""
    alone_db, batch_db = _database(root / "a"), _database(root / "b")
    alone_jobs = _queue_us_jobs(alone_db, root / "in-a")
    batch_jobs = _queue_us_jobs(batch_db, root / "in-b")
    for job_id in alone_jobs:
        assert execute_job(alone_db, models, root / "ra", job_id) is not None
    return alone_db, alone_jobs, batch_db, batch_jobs


class _CountingNet:
    """The U-Net, recording how many frames each call of it got."""

    def __init__(self, net: Callable[[Any], Any]) -> None:
        self.net = net
        self.calls: list[int] = []

    def __call__(self, x: Any) -> Any:
        self.calls.append(int(x.shape[0]))
        return self.net(x)


@pytest.fixture
def counted() -> Iterator[tuple[ModelCache, _CountingNet]]:
    models = ModelCache("cpu")
    predictor = models.get(get_spec(HEAD)).predictor  # type: ignore[attr-defined]
    net = _CountingNet(predictor.model)
    predictor.model = net
    yield models, net


def test_a_batch_gives_each_job_what_it_gets_alone(
    tmp_path: Path, counted: tuple[ModelCache, _CountingNet]
) -> None:
    models, net = counted
    alone_db, alone_jobs, batch_db, batch_jobs = _queued_twice_first_run_alone(tmp_path, models)
    assert net.calls == [1] * 5  # the CPU predictor's batch size: one frame per pass
    net.calls.clear()

    states = execute_batch(
        batch_db, models, tmp_path / "rb", batch_jobs[0], batching=Batching(4, 0.0)
    )
    assert list(states) == batch_jobs  # the leader first, its mates oldest first
    assert net.calls == [1] * 5  # ... all five frames in one grouped forward call
    for alone, batched in zip(alone_jobs, batch_jobs, strict=True):
        a, b = _outcome(alone_db, alone), _outcome(batch_db, batched)
        assert states[batched] is b.state is a.state
        assert a.state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)
        assert b.attempts == a.attempts == 1
        assert b.measurements == a.measurements  # HC, BPD, OFD, GA, measured frame: exact
        assert "head_circumference_mm" in b.measurements
        np.testing.assert_array_equal(b.seg, a.seg)
        assert b.sr == a.sr and b.report_status == a.report_status
    with batch_db() as session:
        for job_id in batch_jobs:
            timings = [line.message for line in _log(session, job_id) if "timings" in line.message]
            assert len(timings) == 1 and "infer" in timings[0], "each job keeps its own timings"


def _log(session: Session, job_id: int) -> list[JobLogLine]:
    return list(session.query(JobLogLine).filter(JobLogLine.job_id == job_id))


def test_frames_of_several_jobs_share_one_pass_at_a_larger_batch_size(
    tmp_path: Path, counted: tuple[ModelCache, _CountingNet]
) -> None:
    """A device batch size over 1 (as on CUDA): one network call for the frames of all three
    jobs; HC within 0.1 mm and the masks within a few boundary pixels of one by one."""
    models, net = counted
    alone_db, alone_jobs, batch_db, batch_jobs = _queued_twice_first_run_alone(tmp_path, models)
    models.get(get_spec(HEAD)).predictor.batch_size = 8  # type: ignore[attr-defined]
    net.calls.clear()
    execute_batch(batch_db, models, tmp_path / "rb", batch_jobs[0], batching=Batching(4, 0.0))
    assert net.calls == [5]
    for alone, batched in zip(alone_jobs, batch_jobs, strict=True):
        a, b = _outcome(alone_db, alone), _outcome(batch_db, batched)
        assert b.state is a.state
        hc = "head_circumference_mm"
        assert b.measurements[hc] == pytest.approx(a.measurements[hc], abs=0.1)
        dice = 2 * (a.seg & b.seg).sum() / (a.seg.sum() + b.seg.sum())
        assert dice >= 0.99


def test_a_job_whose_output_or_input_fails_does_not_fail_its_batch_mates(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _queue_us_jobs(session_factory, tmp_path / "in")
    (tmp_path / "in" / "us200103.dcm").write_bytes(b"not DICOM")  # the third job's input
    from worker.pipeline.run import export as real_export

    def export(*args: Any, **kwargs: Any) -> Any:
        if f"job-{jobs[1]}" in str(args[4]):  # the second job's output folder
            raise OSError("No space left on device")
        return real_export(*args, **kwargs)

    monkeypatch.setattr("worker.pipeline.grouped.export", export)
    states = execute_batch(
        session_factory,
        ModelCache("cpu"),
        tmp_path / "r",
        jobs[0],
        batching=Batching(4, 0.0),
        worker="w1",
    )
    assert states[jobs[0]] in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)
    assert states[jobs[1]] is JobState.QUEUED  # retryable: tried again after its backoff
    assert states[jobs[2]] is JobState.FAILED  # not an image: permanent, at once
    with session_factory() as session:
        first, second, third = (session.get_one(Job, j) for j in jobs)
        assert len(first.results) == 1 and first.error is None
        assert second.results == [] and second.attempts == 1
        assert second.error is not None and "No space left on device" in second.error
        assert second.not_before is not None and second.error_kind == "retryable"
        assert third.results == [] and third.attempts == 1 and third.error_kind == "input"
        assert {first.worker, second.worker, third.worker} == {"w1"}


def test_a_failed_shared_forward_pass_is_each_members_own_attempt(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _queue_us_jobs(session_factory, tmp_path / "in")
    models = ModelCache("cpu")
    model = models.get(get_spec(HEAD))

    def out_of_memory(prepared: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(model, "forward_batch", out_of_memory)
    states = execute_batch(session_factory, models, tmp_path / "r", jobs[0], batching=Batching(4))
    assert states == dict.fromkeys(jobs, JobState.QUEUED)
    with session_factory() as session:
        for job_id in jobs:
            job = session.get_one(Job, job_id)
            assert job.attempts == 1 and job.error is not None and "out of memory" in job.error


def test_batching_off_runs_the_job_alone(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    jobs = _queue_us_jobs(session_factory, tmp_path / "in")
    states = execute_batch(
        session_factory, ModelCache("cpu"), tmp_path / "r", jobs[0], batching=Batching(1, 1.0)
    )
    assert list(states) == [jobs[0]]
    with session_factory() as session:
        assert [session.get_one(Job, j).state for j in jobs[1:]] == [JobState.QUEUED] * 2


class _FakeTime:
    """A clock that only moves when the code under test sleeps; ``arrivals[k]`` runs at the
    k-th sleep (a job queued meanwhile)."""

    def __init__(self, arrivals: dict[int, Callable[[], None]] | None = None) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.arrivals = arrivals or {}

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds
        arrive = self.arrivals.get(len(self.slept))
        if arrive is not None:
            arrive()

    def claim_mates(
        self,
        session_factory: sessionmaker[Session],
        leader: Claimed,
        tmp_path: Path,
        batching: Batching,
    ) -> list[Claimed]:
        """``claim_mates`` for worker w1, waiting on this clock."""
        return claim_mates(
            session_factory, leader, tmp_path, "w1", batching, clock=self.clock, sleep=self.sleep
        )


def _job(
    session_factory: sessionmaker[Session], queue: str = "gpu", model: str = "m", **fields: Any
) -> int:
    job_id = add_job(session_factory, queue, **fields)
    set_job(session_factory, job_id, model_name=model)
    return job_id


def _leader(session_factory: sessionmaker[Session], tmp_path: Path) -> Any:
    leader = claim(session_factory, _job(session_factory), tmp_path, 0.0, "w1")
    assert leader is not None
    return leader


def _state(session_factory: sessionmaker[Session], job_id: int) -> tuple[JobState, str | None]:
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        return job.state, job.worker


def test_the_wait_takes_what_arrives_in_time_and_ends_at_its_bound(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    leader = _leader(session_factory, tmp_path)
    arrived: list[int] = []
    fake = _FakeTime({2: lambda: arrived.append(_job(session_factory))})
    mates = fake.claim_mates(session_factory, leader, tmp_path, Batching(4, 0.02))
    assert [m.job_id for m in mates] == arrived  # the job queued during the wait joined
    assert sum(fake.slept) == pytest.approx(0.02)  # then it waited out the rest, no longer
    assert _state(session_factory, arrived[0]) == (JobState.RUNNING, "w1")
    late = _job(session_factory)  # after the wait: left for its own message
    assert _state(session_factory, late) == (JobState.QUEUED, None)


def test_a_full_batch_does_not_wait_and_no_wait_means_none(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    leader = _leader(session_factory, tmp_path)
    queued = [_job(session_factory) for _ in range(3)]
    fake = _FakeTime()
    full = fake.claim_mates(session_factory, leader, tmp_path, Batching(3, 10.0))
    assert [m.job_id for m in full] == queued[:2] and fake.slept == []  # oldest first
    assert _state(session_factory, queued[2])[0] is JobState.QUEUED
    alone = fake.claim_mates(session_factory, leader, tmp_path, Batching(8, 0.0))
    assert [m.job_id for m in alone] == queued[2:] and fake.slept == []


def test_only_due_queued_jobs_of_the_same_model_and_queue_join(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    leader = _leader(session_factory, tmp_path)
    later = utcnow() + timedelta(minutes=5)
    others = [
        _job(session_factory, model="other"),
        _job(session_factory, "cpu"),
        _job(session_factory, not_before=later),  # backing off after a failure
        _job(session_factory, state=JobState.FAILED),
    ]
    due = _job(session_factory, not_before=utcnow() - timedelta(seconds=1))
    mates = claim_mates(session_factory, leader, tmp_path, "w1", Batching(8, 0.0))
    assert [m.job_id for m in mates] == [due]
    assert [_state(session_factory, j)[0] for j in others] == [
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.FAILED,
    ]


def test_a_mates_own_message_is_then_a_duplicate(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    leader = _leader(session_factory, tmp_path)
    mate = _job(session_factory)
    claim_mates(session_factory, leader, tmp_path, "w1", Batching(2, 0.0))
    assert claim(session_factory, mate, tmp_path, 3600.0, "w2") is None  # running in w1's batch
    assert _state(session_factory, mate) == (JobState.RUNNING, "w1")


def test_batching_is_on_by_default_on_cuda_only(tmp_path: Path) -> None:
    defaults = Settings(data_dir=tmp_path)
    assert Batching.for_device(defaults, "cpu").max_jobs == 1
    assert Batching.for_device(defaults, "cuda:1") == Batching(16, 0.01)
    chosen = Settings(data_dir=tmp_path, batch_max=4, batch_wait_ms=50)
    assert Batching.for_device(chosen, "cpu") == Batching(4, 0.05)
    assert Batching.for_device(chosen, "cpu").note().startswith("up to 4 jobs")


def test_chest_films_of_different_sizes_share_one_pass(tmp_path: Path) -> None:
    """The chest film model's batched forward: two films of different sizes, one network call
    at a batch size of 2, each finished to the result it gets alone."""
    from worker.models.lung_cxr.cr_dicom import write_cxr
    from worker.models.lung_cxr.phantoms import make_chest_xray
    from worker.pipeline.loading import load_series

    model: Any = ModelCache("cpu").get(get_spec("lung-cxr"))
    films = [
        load_series([write_cxr(make_chest_xray(seed, size=size), tmp_path / f"cr{seed}.dcm")])
        for seed, size in ((600001, 320), (600002, 256))
    ]
    alone = [model.predict(series) for series in films]
    net = _CountingNet(model.unet.model)
    model.unet.model, model.unet.batch_size = net, 2
    raws = model.forward_batch([model.prepare(series) for series in films])
    together = [model.finish(s, raw) for s, raw in zip(films, raws, strict=True)]
    assert net.calls == [2]
    for a, b in zip(alone, together, strict=True):
        assert [s.kind.label for s in b.segments] == [s.kind.label for s in a.segments]
        for ours, reference in zip(b.segments, a.segments, strict=True):
            inter = (ours.mask & reference.mask).sum()
            assert 2 * inter / (ours.mask.sum() + reference.mask.sum()) >= 0.99
        values = {m.key: m.value for m in a.measurements}
        for m in b.measurements:
            assert m.value == pytest.approx(values[m.key], rel=0.01), m.key


def test_the_shared_forward_pass_runs_in_the_workers_precision(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from worker.pipeline import precision

    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    jobs = _queue_us_jobs(session_factory, tmp_path / "in")
    models = ModelCache("cpu", "bf16")
    model: Any = models.get(get_spec(HEAD))
    real = model.forward_batch
    seen: list[bool] = []

    def spy(prepared: Any) -> Any:
        seen.append(torch.is_autocast_enabled("cpu"))
        with torch.autocast("cpu", enabled=False):  # emulated bf16 is slow on most CPUs
            return real(prepared)

    monkeypatch.setattr(model, "forward_batch", spy)
    execute_batch(session_factory, models, tmp_path / "r", jobs[0], batching=Batching(4))
    assert seen == [True]


def test_the_worker_says_at_start_how_it_batches(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.pipeline.context import WorkerContext

    caplog.set_level("INFO", logger="worker.pipeline.context")
    chosen = settings.model_copy(update={"batch_max": 8, "device": "cpu"})
    ctx = WorkerContext.create(chosen)
    try:
        assert ctx.batching == Batching(8, 0.01)
    finally:
        ctx.engine.dispose()
    assert "batching across series up to 8 jobs per forward pass, waiting 10 ms" in caplog.text


def test_when_the_batchs_time_is_up_the_members_not_yet_recorded_fail_with_it(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's limit bounds the whole batch: the timer's error, raised inside the second
    job's post-processing, fails it and the third (not run); the first stays recorded."""
    from worker.core.timelimits import TimeLimit
    from worker.pipeline.grouped import finish_loaded
    from worker.runtime.deadline import TimeLimitExceededError

    jobs = _queue_us_jobs(session_factory, tmp_path / "in")
    finished: list[Path] = []

    def finish(item: Any, raw: Any, out_dir: Path) -> Any:
        if out_dir.name == f"job-{jobs[1]}":
            raise TimeLimitExceededError(TimeLimit(300, "the model's default"), "w1")
        finished.append(out_dir)
        return finish_loaded(item, raw, out_dir)

    monkeypatch.setattr("worker.runtime.batch_jobs.finish_loaded", finish)
    states = execute_batch(
        session_factory, ModelCache("cpu"), tmp_path / "r", jobs[0], batching=Batching(4)
    )
    assert states[jobs[0]] in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)
    assert states[jobs[1]] is states[jobs[2]] is JobState.QUEUED  # retried, as alone
    assert [p.name for p in finished] == [f"job-{jobs[0]}"]
    with session_factory() as session:
        for job_id in jobs[1:]:
            job = session.get_one(Job, job_id)
            assert job.error is not None and job.error.startswith("time limit exceeded")
            assert job.results == [] and job.attempts == 1
