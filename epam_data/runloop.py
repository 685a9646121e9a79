"""The run loop shared by `epam-data extract` and `import-pyskl`: tasks -> per-sample function in
workers -> shards.

A command hands `run_samples` its tasks (one per sample) and a module-level `prepare(task, *,
times)` that makes a `PreparedSample` or raises. The loop keeps the tasks of this `--part` that no
finished shard holds yet, runs `prepare` in supervised worker processes (`--jobs`,
`epam_data.supervisor`), on a Dask or a Ray cluster, and streams the outcomes as they complete into
the one `ShardWriter` of this process; failures go to failures.csv and never stop the run. Memory
holds a few samples, not the run (docs/design.md). A command may also hand it `prepare_group`, which
prepares several tasks together (`extract --in-flight`, `epam_data.in_flight`): a worker then
receives groups, and the outcomes stay one per sample.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from epam_data.atomic import write_csv_atomic
from epam_data.datasets import Rejected, Sample
from epam_data.errors import EpamError, one_line
from epam_data.shards import DEFAULT_MAX_SHARD_BYTES, PreparedSample, ShardWriter, done_ids
from epam_data.shards.layout import index_lock
from epam_data.shards.lock import FileLock
from epam_data.supervisor import LATE, supervised_map
from epam_data.threads import one_thread_per_process

DEFAULT_SAMPLE_TIMEOUT = 3600.0  # seconds one sample may take in a worker before it counts as hung
# With prepare_group, a worker receives this many rounds of `in_flight` tasks: in_flight start, and
# each that ends makes room for the next, so the batch stays full but for the group's last few.
GROUP_ROUNDS = 4

__all__ = [
    "DEFAULT_SAMPLE_TIMEOUT",
    "ExtractReport",
    "Outcome",
    "Prepare",
    "PrepareGroup",
    "StageTimes",
    "Task",
    "check_jobs",
    "failed_outcome",
    "parse_part",
    "run_group",
    "run_samples",
    "run_task",
    "select_part",
    "task_outcome",
    "write_rejected",
]


class Task(Protocol):
    """What the run loop needs of a unit of work (a `VideoSpec`, a `pyskl.AnnotationSpec`): the
    sample it makes and where it comes from, for failures.csv. Whatever else it holds travels to the
    worker that prepares it."""

    @property
    def sample(self) -> Sample: ...

    @property
    def source(self) -> str: ...


TaskT = TypeVar("TaskT", bound=Task)
Prepare = Callable[
    ..., PreparedSample
]  # prepare(task, *, times: StageTimes) -> PreparedSample; module-level
# prepare_group(tasks) -> one Outcome per task, in order; module-level; it may raise only for what
# it cannot pin on one sample (the group is then prepared again one task at a time)
PrepareGroup = Callable[[Sequence[Any]], list["Outcome"]]
Group = Sequence[Task]  # the tasks one worker call prepares
Work = functools.partial  # _run_in_worker with its prepare and prepare_group: work(group)


@dataclass
class StageTimes:
    """Seconds spent per stage for one sample (or summed over many)."""

    decode: float = 0.0
    pose: float = 0.0
    crop: float = 0.0
    heatmaps: float = 0.0

    def add(self, other: StageTimes) -> None:
        for name in ("decode", "pose", "crop", "heatmaps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back: the prepared sample, or why there is none."""

    sample: Sample
    source: str
    prepared: PreparedSample | None
    reason: str = ""
    frames: int = 0
    times: StageTimes = field(default_factory=StageTimes)
    lost_with_group: bool = False  # its worker died preparing a group: worth trying alone
    group_failure: str = ""  # why its group failed, when it was then prepared alone


@dataclass
class ExtractReport:
    """What a run did, for the summary table; `failed` decides the exit code."""

    out_dir: Path
    listed: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    in_part: int = 0
    already_done: int = 0
    ok: int = 0
    no_person: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, reason)
    frames: int = 0
    persons: int = 0
    elapsed_s: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)
    shards: list[str] = field(default_factory=list)
    prepared_alone: int = 0  # samples prepared one at a time after their group failed
    group_failure: str = ""  # the first such group's reason

    @property
    def failed(self) -> int:
        return len(self.failures)

    def add(self, outcome: Outcome) -> None:
        self.frames += outcome.frames
        self.times.add(outcome.times)
        if outcome.group_failure:
            self.prepared_alone += 1
            self.group_failure = self.group_failure or outcome.group_failure
        if outcome.prepared is None:
            self.failures.append((outcome.sample.sample_id, outcome.reason))
        elif outcome.prepared.status == "no_person":
            self.no_person += 1
        else:
            self.ok += 1
            self.persons += int(outcome.prepared.num_persons)


# --- parts and workers ----------------------------------------------------------------------------


def parse_part(text: str) -> tuple[int, int]:
    """`--part i/n` (1-based, as SLURM array indices usually are: 1/4 .. 4/4) -> ShardWriter's
    0-based (i-1, n)."""
    try:
        index, count = (int(value) for value in text.split("/"))
    except ValueError:
        raise EpamError(f"--part {text!r}: expected i/n with 1 <= i <= n, e.g. 1/4") from None
    if not 1 <= index <= count:
        raise EpamError(
            f"--part {text!r}: expected i/n with 1 <= i <= n (1-based), e.g. 1/{max(count, 1)}"
        )
    return index - 1, count


def select_part(
    items: list[Any], part: tuple[int, int] | None, key: Callable[[Any], str]
) -> list[Any]:
    """Part (i, n) (0-based) of `items`: every n-th item from the i-th, in sorted order of `key`
    (the sample id).

    Deterministic for the same inputs on every machine, balanced to one sample, and the parts cover
    every item exactly once. A sample that moves to another part when the input list changes is
    still skipped there, because `done_ids` sees the finished shards of every part.
    """
    ordered = sorted(items, key=key)
    return ordered if part is None else ordered[part[0] :: part[1]]


_local = threading.local()  # per worker process, and per thread where a Dask worker runs several


def _limit_threads() -> None:
    """One compute thread per worker: the parallelism is one process per video (docs: blazepose
    measurements)."""
    if getattr(_local, "limited", False):
        return
    one_thread_per_process()
    _local.limited = True


def run_task(prepare: Prepare, task: Task) -> Outcome:
    """`prepare(task)` that never raises: a failure becomes an Outcome with the reason, so one bad
    sample cannot stop the run."""
    times = StageTimes()
    return task_outcome(task, times, functools.partial(prepare, task, times=times))


def task_outcome(task: Task, times: StageTimes, make: Callable[[], PreparedSample]) -> Outcome:
    """The Outcome of `make()` for `task`: the sample it prepares, or its failure with the reason
    (`run_task`; `epam_data.in_flight` finishes the samples of a group with it)."""
    try:
        prepared = make()
    # a bug or a library error on one sample must not end the run
    except Exception as err:  # noqa: BLE001
        return failed_outcome(task, times, err)
    return Outcome(task.sample, task.source, prepared, frames=prepared.num_frames, times=times)


def failed_outcome(task: Task, times: StageTimes, err: Exception) -> Outcome:
    """The failure of `task` with `err` as its reason: an EpamError's own line, else the
    exception's type and message."""
    reason = str(err) if isinstance(err, EpamError) else f"{type(err).__name__}: {err}"
    return Outcome(task.sample, task.source, None, reason=reason, times=times)


def run_group(
    prepare: Prepare, prepare_group: PrepareGroup | None, tasks: Sequence[Task]
) -> list[Outcome]:
    """The outcomes of a group of tasks prepared together (`prepare_group`, e.g. K videos tracked
    in flight), or one at a time without it. Never raises: should the group fail as a whole, its
    tasks are prepared again one by one, so that only the sample at fault fails."""
    if prepare_group is None or len(tasks) == 1:
        return [run_task(prepare, task) for task in tasks]
    try:
        return prepare_group(tasks)
    except Exception as err:  # noqa: BLE001 (a failure the group could not pin on one sample)
        why = one_line(f"{type(err).__name__}: {err}", 200)
        return _alone(prepare, tasks, why)


def _alone(prepare: Prepare, tasks: Sequence[Task], why: str) -> list[Outcome]:
    """The tasks of a failed group prepared one at a time, each saying why (`group_failure`)."""
    return [replace(run_task(prepare, task), group_failure=why) for task in tasks]


def _run_in_worker(
    prepare: Prepare, prepare_group: PrepareGroup | None, tasks: Sequence[Task]
) -> list[Outcome]:
    """What every worker executes (supervised, Dask, Ray): `run_group` with one compute thread in
    the worker process."""
    _limit_threads()
    return run_group(prepare, prepare_group, tasks)


def _lost_outcomes(tasks: Sequence[Task], reason: str) -> list[Outcome]:
    """The failures of the samples whose worker process crashed or hung (epam_data.supervisor);
    in a group, every sample of it, marked `lost_with_group`: which one was at fault is unknown,
    so `run_samples` prepares each of them again alone."""
    if reason.startswith(LATE):
        hint = "(a hanging decoder?); raise --sample-timeout if it is just long"
    else:
        hint = "(a crash in a decoder or library)"
    return [
        Outcome(
            task.sample,
            task.source,
            None,
            reason=f"{task.source}: {reason} {hint}",
            lost_with_group=len(tasks) > 1,
        )
        for task in tasks
    ]


def check_jobs(jobs: int) -> None:
    """Refuse `--jobs` below 1 before any slow work starts (listing videos, loading a pickle)."""
    if jobs < 1:
        raise EpamError(f"--jobs must be at least 1, got {jobs}")


def _ray_results(groups: Sequence[Group], work: Work, address: str) -> Iterator[list[Outcome]]:
    """Outcomes from a Ray cluster ("auto", "ray://head:10001", or "local" for one started here), a
    group's at a time, as they complete.

    Ray's own task API rather than its joblib backend: that backend cannot stream results (joblib
    refuses return_as="generator" for it), so every prepared sample would sit in memory until the
    last one finished. At most two tasks per cluster CPU are in flight, so the driver holds a
    bounded number of results.
    """
    try:
        import ray
    except ImportError:
        raise EpamError("--ray needs ray: pip install 'epam[ray]'") from None
    try:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise EpamError(
            f"--ray {address}: cannot connect to the cluster ({one_line(err, 300)})"
        ) from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_run_in_worker)
        in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        group_of: dict[Any, Group] = {}
        for group in groups:
            group_of[remote.remote(*work.args, group)] = group
            while len(group_of) >= in_flight:
                yield _next_ray_outcomes(ray, group_of)
        while group_of:
            yield _next_ray_outcomes(ray, group_of)
    finally:
        ray.shutdown()


def _next_ray_outcomes(ray: Any, group_of: dict[Any, Group]) -> list[Outcome]:
    """The next finished Ray task's outcomes; a worker that crashed costs its samples only."""
    [done], _ = ray.wait(list(group_of), num_returns=1)
    group = group_of.pop(done)
    try:
        return ray.get(done)
    except ray.exceptions.RayError as err:  # the worker died (a decoder crash) or the task failed
        return _lost_outcomes(group, f"the Ray worker preparing it failed ({one_line(err, 200)})")


def _results(
    groups: Sequence[Group],
    work: Work,
    jobs: int,
    dask_address: str | None,
    ray_address: str | None = None,
    timeout: float | None = None,
) -> Iterator[Outcome]:
    """Outcomes as the groups complete: in `jobs` supervised worker processes here (a group whose
    worker crashes or runs past `timeout` seconds becomes failures,
    `epam_data.supervisor`), or on a Dask or a Ray cluster. Each worker receives one group at a
    time as it frees up, never the whole list.
    """
    if dask_address is not None and ray_address is not None:
        raise EpamError("--dask and --ray: choose one cluster")
    if ray_address is not None:
        results = _ray_results(groups, work, ray_address)
    elif dask_address is not None:
        results = _dask_results(groups, work, dask_address)
    else:
        results = supervised_map(
            work, groups, workers=jobs, timeout=timeout, on_lost=_lost_outcomes
        )
    for outcomes in results:
        yield from outcomes


def _dask_results(groups: Sequence[Group], work: Work, address: str) -> Iterator[list[Outcome]]:
    """Outcomes from a Dask cluster through joblib's dask backend, a group's at a time, streamed as
    they complete."""
    from joblib import Parallel, delayed, parallel_config

    try:
        from distributed import Client
    except ImportError:
        raise EpamError("--dask needs dask and distributed: pip install 'epam[dask]'") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise EpamError(f"--dask {address}: cannot connect to the scheduler ({err})") from None
    calls = (delayed(work)(group) for group in groups)
    try:
        with parallel_config(backend="dask"):
            yield from Parallel(n_jobs=-1, batch_size=1, return_as="generator_unordered")(calls)
    finally:
        client.close()


def _group_size(prepare_group: PrepareGroup | None, in_flight: int, pending: int, jobs: int) -> int:
    """Tasks per worker call: 1 without `prepare_group`, else GROUP_ROUNDS x in_flight, but no
    more than a worker's share of the pending tasks, so that every worker gets a group."""
    if prepare_group is None:
        return 1
    return max(1, min(GROUP_ROUNDS * in_flight, -(-pending // jobs)))


def _groups(tasks: Sequence[TaskT], size: int) -> list[list[TaskT]]:
    """`tasks` in consecutive groups of `size` (the last one shorter)."""
    return [list(tasks[first : first + size]) for first in range(0, len(tasks), size)]


def run_samples(
    tasks: Sequence[TaskT],
    prepare: Prepare,
    out_dir: Path,
    report: ExtractReport,
    *,
    jobs: int = 1,
    part: tuple[int, int] | None = None,
    samples_per_shard: int = 256,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dask_address: str | None = None,
    ray_address: str | None = None,
    sample_timeout: float | None = DEFAULT_SAMPLE_TIMEOUT,
    prepare_group: PrepareGroup | None = None,
    in_flight: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[Outcome], None] | None = None,
) -> ExtractReport:
    """The run loop of `extract` and `import-pyskl`: this part's tasks not yet in finished shards ->
    `prepare` in workers -> the one ShardWriter (failures to failures.csv) -> `report`, which it
    fills and returns.

    `prepare(task, *, times)` is a module-level function of one task (so that workers and Dask can
    send it by name) that returns a PreparedSample or raises; the caller has written dataset.json
    already. part: (i, n), 0-based. With `prepare_group`, which prepares `in_flight` tasks at a
    time, a worker receives up to GROUP_ROUNDS x in_flight tasks at once (`run_group`), and may
    take `sample_timeout` for each round of them.
    """
    check_jobs(jobs)
    tasks = select_part(list(tasks), part, key=lambda task: task.sample.sample_id)
    report.in_part = len(tasks)
    done = done_ids(out_dir)
    pending = [task for task in tasks if task.sample.sample_id not in done]
    report.already_done = len(tasks) - len(pending)
    if on_start is not None:
        on_start(len(pending))
    groups = _groups(pending, _group_size(prepare_group, in_flight, len(pending), jobs))
    rounds = -(-max(map(len, groups), default=1) // in_flight)
    timeout = None if sample_timeout is None else sample_timeout * rounds
    work = functools.partial(_run_in_worker, prepare, prepare_group)
    with ShardWriter(
        out_dir, samples_per_shard=samples_per_shard, part=part, max_shard_bytes=max_shard_bytes
    ) as writer:
        record = functools.partial(_record, writer, report, on_result)
        lost: set[str] = set()
        for outcome in _results(groups, work, jobs, dask_address, ray_address, timeout):
            if not record(outcome):
                lost.add(outcome.sample.sample_id)
        # the samples of a group whose worker died, each alone now: only the culprit fails
        again = [[task] for task in pending if task.sample.sample_id in lost]
        alone = functools.partial(_run_in_worker, prepare, None)
        for outcome in _results(again, alone, jobs, dask_address, ray_address, sample_timeout):
            record(replace(outcome, group_failure="its group's worker crashed or hung"))
    report.shards = list(writer.shards_finished)
    return report


def _record(
    writer: ShardWriter,
    report: ExtractReport,
    on_result: Callable[[Outcome], None] | None,
    outcome: Outcome,
) -> bool:
    """The outcome into the shards (or failures.csv), the report and the progress; False, with
    nothing recorded, for a sample lost with its group (to be prepared again alone)."""
    if outcome.lost_with_group:
        return False
    if outcome.prepared is not None:
        writer.write(outcome.prepared)
    else:
        writer.fail(outcome.sample, outcome.reason)
    report.add(outcome)
    if on_result is not None:
        on_result(outcome)
    return True


def write_rejected(out_dir: Path, rejected: Iterable[Rejected]) -> None:
    """`<out>/rejected.csv`: the input names no sample came from, with why (rewritten by every
    run)."""
    rows = ((item.name, " ".join(item.reason.split())) for item in rejected)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(index_lock(out_dir)):  # the index rebuild clears stale temp files under it
        write_csv_atomic(out_dir / "rejected.csv", ["name", "reason"], rows)
