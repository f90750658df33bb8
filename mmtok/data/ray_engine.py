"""The Ray engine of `tokenize_dataset` / `mmtok tokenize --engine ray`: shards done by a Ray actor pool.

The driver plans the run exactly as the local engine does (discovery order, fixed shard blocks, run.json,
complete shards skipped); here each missing shard becomes one Ray task. A pool of `concurrency` actors
each gets the tokenizers once (through the object store, moved to its GPU when `num_gpus_per_worker` > 0)
and runs the local engine's own `run_works` on one shard at a time, so every shard is decoded, tokenized
and written atomically by the same code, and the output is byte-identical to the local engine's.

What is retried: an actor whose process dies (SIGKILL, OOM killer, lost node) is restarted by Ray
(always: `max_restarts=-1`) and the shard it was doing is resubmitted (up to MAX_RETRIES times); the half-written
temporary files of the dead process are removed by the retry (outdir.stale_temporaries) and the shard is
written from scratch. A bad input is a failure record as ever, never a retry. A shard that still fails
after the retries is reported at the end (the other shards are finished first); rerunning the command
redoes it. Ray is an optional extra: `pip install "mmtok[ray]"`.
"""
from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass

from .remote import UploadShard

INSTALL = "pip install 'mmtok[ray]'  (or: pip install ray)"
KILL_ENV = "MMTOK_RAY_TEST_SIGKILL"  # test hook: "SHARD:N:MARKER" -> an actor SIGKILLs itself at item N of
#                                      shard SHARD, once (the marker file says it already did; "always": every time)
MAX_RETRIES = 3      # attempts of a shard after the first, when its actor died doing it (actors restart always)
IN_FLIGHT = 2        # shards queued per actor: the next one is ready when the current one is written
REPORT_EVERY = 32    # items between an actor's progress reports (one small actor call each)


class ShardsLost(RuntimeError):
    """Shards that failed on Ray even after the retries (rerun the command to redo them)."""


def require_ray():
    """The `ray` module, or a ValueError with the install command (before any work starts)."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray, which is not installed here ({exc}); install it with: "
                         f"{INSTALL}") from None
    return ray


@dataclass
class RayOptions:
    address: str | None = None          # None: the running Ray (ray.init'ed), else a new local one; "auto"...
    num_gpus_per_worker: float = 0
    concurrency: int | None = None      # actors; None: as many as the cluster's CPUs (or GPUs) allow
    started: bool = False               # this run started (or joined) Ray itself: ray.shutdown() at the end

    @classmethod
    def checked(cls, *, address, num_gpus_per_worker, concurrency, world_size) -> "RayOptions":
        require_ray()
        world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
        if world != 1:
            raise ValueError(f"--engine ray plans every shard itself: do not combine it with ranks "
                             f"(world_size {world}; unset WORLD_SIZE / --world-size)")
        if isinstance(num_gpus_per_worker, bool) or not isinstance(num_gpus_per_worker, (int, float)) \
                or not 0 <= num_gpus_per_worker < float("inf"):
            raise ValueError(f"num_gpus_per_worker (--num-gpus-per-worker) must be a number >= 0, "
                             f"got {num_gpus_per_worker!r}")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise ValueError(f"concurrency (--concurrency) must be an int >= 1, got {concurrency!r}")
        opts = cls(address, float(num_gpus_per_worker), concurrency)
        opts.started = _connect(require_ray(), address)  # before any work: a cluster not reachable is an error now
        return opts

    def run(self, works, carried, options, out_dir, vocab, dtype, image_tokenizers, audio_tokenizer, batch_size,
            workers, summary, progress) -> None:
        """The Ray counterpart of pipeline.run_works: same arguments, same shards written, same summary."""
        if works:
            _drive(self, works, carried, (options, out_dir, vocab, dtype, image_tokenizers, audio_tokenizer,
                                          batch_size, workers, summary.on_shard), summary, progress)
        elif self.started:  # nothing to do: leave no Ray of ours running
            require_ray().shutdown()


class _ActorKill:
    """Test-only: SIGKILL this actor at item N of one shard, the first time only (a marker file remembers)."""

    def __init__(self, spec: str | None):
        self.shard = self.count = None
        if spec:
            shard, count, self.marker = spec.split(":", 2)
            self.shard, self.count = int(shard), int(count)
        self.seen = 0

    def __call__(self, kind: str, index=None) -> None:
        if kind == "samples" and index == self.shard:
            self.seen += 1
            if self.seen == self.count and (self.marker == "always" or not os.path.exists(self.marker)):
                if self.marker != "always":
                    with open(self.marker, "w") as f:
                        f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)


class _ItemHook:
    """run_works' per-item hook in an actor: the test kill hook, and progress reports every REPORT_EVERY items."""

    def __init__(self, kill: _ActorKill, progress, shard: int):
        self.kill, self.progress, self.shard, self.seen = kill, progress, shard, 0

    def __call__(self, kind: str, index=None) -> None:
        self.kill(kind, index)
        if kind == "samples" and self.progress is not None:
            self.seen += 1
            if self.seen % REPORT_EVERY == 0:
                self.progress.report.remote(self.shard, self.seen)


class _Progress:
    """A CPU-less actor holding the items done so far of each shard in progress (for the driver's bar)."""

    def __init__(self):
        self.done: dict[int, int] = {}

    def report(self, shard: int, items: int) -> None:
        self.done[shard] = items

    def partial(self) -> dict:
        return dict(self.done)


class ShardWorker:
    """A Ray actor's state: the run's tokenizers and options, received once; `shard` does one shard."""

    def __init__(self, setup, device: str | None, kill_spec: str | None, progress=None):
        self.options, self.out_dir, self.vocab, self.dtype, self.image_tokenizers, self.audio_tokenizer, \
            self.batch_size, self.workers, self.on_shard = setup
        if isinstance(self.on_shard, UploadShard):  # --out is a URL: stage on this actor's machine, upload from here
            self.out_dir = self.on_shard.remote.staging
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if device is not None:
            video = self.options.video_tokenizer
            for tok in {id(t): t for t in (*self.image_tokenizers, self.audio_tokenizer,
                                           getattr(video, "audio_tokenizer", None)) if t is not None}.values():
                tok.to(device)
        self.kill_spec, self.progress = kill_spec, progress

    def shard(self, shard: int, works: list, carried: dict) -> dict:
        from .pipeline import Summary, run_works

        summary = Summary(0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, on_shard=self.on_shard)  # on_shard: the upload
        run_works(works, {shard: carried}, self.options, self.out_dir, self.vocab, self.dtype,
                  self.image_tokenizers, self.audio_tokenizer, self.batch_size, self.workers, summary,
                  progress=False, kill=_ItemHook(_ActorKill(self.kill_spec), self.progress, shard))
        return {"shard": shard, "items": len(works), "written": summary.shards_written,
                "processed": summary.processed, "samples": summary.samples, "failures": summary.failures,
                "tokens": summary.tokens, "failures_in_shards": summary.failures_in_shards,
                "failed_keys": summary.failed_keys}

    def pid(self) -> int:
        return os.getpid()


PROBE_TIMEOUT_S = 5.0  # a cluster address that accepts no TCP connection within this is refused at once


def _probe(address: str | None) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) address nothing listens on, in seconds: ray.init itself retries
    for minutes before it gives up."""
    if not address or address == "auto" or address.startswith("local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ValueError(f"--engine ray: cannot reach a Ray cluster at {address} (--ray-address): "
                         f"{type(exc).__name__}: {exc}") from None


def _connect(ray, address):
    """(started_here): join the running Ray, the one at `address`, or start a local one."""
    if ray.is_initialized():
        return False
    _probe(address or os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, TimeoutError, RuntimeError, ... from ray.init
        where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
        raise ValueError(f"--engine ray: cannot start or join Ray at {where} (--ray-address): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return True


def _pool_size(ray, opts: RayOptions) -> int:
    if opts.concurrency is not None:
        return opts.concurrency
    resources = ray.cluster_resources()
    if opts.num_gpus_per_worker > 0:
        gpus = int(resources.get("GPU", 0) // opts.num_gpus_per_worker)
        if gpus < 1:
            raise ValueError(f"--num-gpus-per-worker {opts.num_gpus_per_worker:g}: the Ray cluster has "
                             f"{resources.get('GPU', 0):g} GPUs")
        return gpus
    return max(1, int(resources.get("CPU", 1)))


def _drive(opts: RayOptions, works, carried, setup, summary, progress) -> None:
    from tqdm import tqdm

    from .pipeline import MAX_LISTED_FAILURES, _KillHook

    ray = require_ray()
    started = opts.started or _connect(ray, opts.address)
    by_shard: dict[int, list] = {}
    for work in works:
        by_shard.setdefault(work.shard, []).append(work)
    pending = sorted(by_shard)
    actors, lost, failed_keys = [], [], {}
    kill = _KillHook()  # test hook of the driver ("shards:K": SIGKILL after K shards are written)
    try:
        setup_ref = ray.put(setup)
        size = min(_pool_size(ray, opts), len(pending))
        actor_class = ray.remote(ShardWorker).options(
            num_cpus=1, num_gpus=opts.num_gpus_per_worker or None, max_restarts=-1,
            max_task_retries=MAX_RETRIES)
        device = "cuda" if opts.num_gpus_per_worker > 0 else None
        reporter = ray.remote(_Progress).options(num_cpus=0).remote() if progress else None
        actors = [actor_class.remote(setup_ref, device, os.environ.get(KILL_ENV), reporter) for _ in range(size)]
        if reporter is not None:
            actors.append(reporter)  # killed with the pool
        running: dict = {}  # ObjectRef -> (actor, shard)

        def submit(n: int) -> None:
            shard = pending.pop(0)
            ref = actors[n].shard.remote(shard, by_shard.pop(shard), carried.pop(shard))
            running[ref] = (n, shard)

        for _ in range(IN_FLIGHT):
            for n in range(size):
                if pending:
                    submit(n)
        bar = tqdm(total=len(works), unit="item", disable=not progress, dynamic_ncols=True, desc="tokenize (ray)")
        shards_done, shards_total, items_done = 0, len(running) + len(pending), 0
        with bar:
            bar.set_postfix(shards=f"0/{shards_total}", refresh=False)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0 if reporter is not None else None)
                if not ready:  # nothing finished within a second: show the items of the shards in progress
                    try:
                        partial = ray.get(reporter.partial.remote(), timeout=10)
                    except Exception:  # noqa: BLE001 - the bar only; the shards are what count
                        partial = {}
                    now = items_done + sum(partial.get(s, 0) for _, s in running.values())
                    if now > bar.n:
                        bar.update(now - bar.n)
                    continue
                ref = ready[0]
                n, shard = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - an actor lost past its retries, or a crash in it
                    lost.append(f"shard {shard}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    result = None
                if result is not None:
                    _add(summary, result)
                    failed_keys[shard] = result["failed_keys"]
                    items_done += result["items"]
                    bar.update(max(0, items_done - bar.n))
                shards_done += 1
                bar.set_postfix(shards=f"{shards_done}/{shards_total}", failed=summary.failures, refresh=False)
                if result is not None:
                    kill("shards")
                if pending:
                    submit(n)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    for shard in sorted(failed_keys):  # in shard order, as the local engine lists them
        room = MAX_LISTED_FAILURES - len(summary.failed_keys)
        summary.failed_keys += failed_keys[shard][:max(room, 0)]
    if lost:
        raise ShardsLost(f"{len(lost)} shard(s) failed on Ray after {MAX_RETRIES} retries (rerun the same command "
                         f"to redo them): " + "; ".join(lost))


def _add(summary, result: dict) -> None:
    summary.shards_written += result["written"]
    summary.processed += result["processed"]
    summary.samples += result["samples"]
    summary.failures += result["failures"]
    summary.tokens += result["tokens"]
    summary.failures_in_shards += result["failures_in_shards"]

