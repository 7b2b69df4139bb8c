"""The loaded model repository: N runners (execution instances) and one batcher per version.

A version that fails to load (corrupt file, metadata the server cannot read, a bad config.json)
is recorded as FAILED with its reason, logged, and shown in metrics; the others serve on.
Versions come and go while the server runs (--model-control poll or explicit): see
ModelRepository.sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ganserve.export.metadata import ModelCard
from ganserve.export.repository import (
    RepositoryError,
    ServingConfig,
    model_names,
    read_serving_config,
    version_folders,
)
from ganserve.server.batcher import Batcher
from ganserve.server.config import ServerConfig
from ganserve.server.errors import ModelNotFound, ModelUnavailable
from ganserve.server.metrics import Metrics, State
from ganserve.server.quality import MARGINS
from ganserve.server.runner import CUDA, Runner, choose_providers, cpu_cores, plan_instances

log = logging.getLogger("ganserve.models")


MAX_SHOWN_NAME = 64  # the longest a model name can be (export.repository.check_name)


def shown(name: str) -> str:
    """A caller's model name as error messages quote it: bounded, so a huge name is never
    echoed back whole (it would overflow the client's metadata limit)."""
    if len(name) <= MAX_SHOWN_NAME:
        return repr(name)
    return f"{name[:MAX_SHOWN_NAME]!r}... ({len(name)} characters)"


@dataclass
class ModelVersion:
    """One version: its state and, once ready, its card, runners and batcher."""

    name: str
    version: int
    path: Path
    state: State = State.LOADING
    error: str = ""
    card: ModelCard | None = None
    runners: tuple[Runner, ...] = ()
    solo: Runner | None = None  # every core's threads, for a batch that runs alone (CPU)
    batcher: Batcher | None = None
    users: int = 0  # leases held: calls that resolved to this version and have not ended
    released: asyncio.Event | None = None  # set when the last lease ends (while retiring)
    # the model file's (mtime_ns, size) at the last attempt to load it: a load that failed
    # is tried again when the file or config.json changes (or on request), not every rescan
    tried: tuple[int, int] = (0, 0)

    @property
    def ready(self) -> bool:
        return self.state is State.READY


class Lease:
    """`async with repo.lease(name, version) as mv`: the version a call resolved to, kept
    loaded until the call ends (a version retired meanwhile unloads once its last lease is
    returned). A class, not a generator: it is on every call's path."""

    __slots__ = ("_mv", "_name", "_repo", "_version")

    def __init__(self, repo: ModelRepository, name: str, version: int) -> None:
        self._repo, self._name, self._version = repo, name, version
        self._mv: ModelVersion | None = None

    async def __aenter__(self) -> ModelVersion:
        mv = self._mv = self._repo.get(self._name, self._version)
        mv.users += 1
        return mv

    async def __aexit__(self, *exc: object) -> None:
        mv = self._mv
        if mv is None:
            return
        self._mv = None
        mv.users -= 1
        if not mv.users and mv.released is not None:
            mv.released.set()


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def wanted_versions(present: list[int], policy: object) -> list[int]:
    """The versions a model's version policy serves, of those present (ascending)."""
    if policy is None or policy == "all":
        return present
    if isinstance(policy, dict) and "latest" in policy:
        return present[-int(policy["latest"]) :]
    if isinstance(policy, dict) and "specific" in policy:
        return [v for v in present if v in set(policy["specific"])]
    raise RepositoryError(f"version_policy: {policy!r}")


class ModelRepository:
    """Every model version under `config.model_repository`, loaded and warmed up by `load`.

    `sync(name)` brings one model in line with the folder (what --model-control poll does for
    every model every --poll-seconds, and RepositoryModelLoad does on request): versions that
    appeared, or whose file or config.json changed, are loaded and warmed up off the serving
    path, then take the place of the old; versions that went (or that the version policy no
    longer names) stop taking new calls, finish the ones they have, then unload. A version
    that fails to load leaves the others serving.
    """

    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.models: dict[str, dict[int, ModelVersion]] = {}
        self._serving: dict[str, ServingConfig | str] = {}  # what each model was loaded with
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._skipped: set[tuple[str, str]] = set()  # (model, folder) not a version, logged
        self.on_change: Callable[[], Awaitable[None]] | None = None  # health follows

    def names_on_disk(self) -> list[str]:
        return model_names(self.config.model_repository)

    async def load(self, names: list[str] | None = None) -> None:
        """Load `names` (default: every model in the folder) at start."""
        names = self.names_on_disk() if names is None else names
        root = self.config.model_repository
        # Every version is known (state "loading") before the first loads, so a call that
        # comes while the server starts hears UNAVAILABLE (retry), not NOT_FOUND.
        for name in names:
            for version in self._versions(name):
                path = root / name / str(version)  # the file is resolved below
                self.models.setdefault(name, {})[version] = ModelVersion(name, version, path)
                self.metrics.set_model_state(name, version, State.LOADING)
        for name in names:
            await self.sync(name)

    def _versions(self, name: str) -> list[int]:
        """The model's version folders; each folder that is not a version is logged once."""
        model_dir = self.config.model_repository / name
        try:
            found, others = version_folders(model_dir)
        except RepositoryError as exc:
            log.error("model %s: %s", name, exc)
            return []
        for other in others:
            if (name, other) not in self._skipped:
                self._skipped.add((name, other))
                log.warning(
                    "model %s: skipping the folder %r, which is not a version "
                    "(a version folder is a number 1 to 2^63 - 1 without leading zeros)",
                    name,
                    other,
                )
        return found

    def _read(self, name: str) -> tuple[ServingConfig, str, list[int]]:
        """The model's config (or its error) and the versions its policy serves."""
        present = self._versions(name)
        try:
            serving = read_serving_config(self.config.model_repository / name)
            return serving, "", wanted_versions(present, serving.version_policy)
        except RepositoryError as exc:
            return ServingConfig(), str(exc), present

    async def sync(self, name: str, retry: bool = False) -> None:
        """Load what is new or changed of model `name`, unload what went; `retry` also tries
        again the versions that failed to load from the files they have now."""
        async with self._lock:
            await self._sync(name, retry)
        if self.on_change is not None:
            await self.on_change()

    async def _sync(self, name: str, retry: bool) -> None:
        serving, error, wanted = self._read(name)
        found = self.models.setdefault(name, {})
        before = self._serving.get(name)
        changed = before is not None and before != (error or serving)
        if changed:
            log.info("model %s: its config.json changed; reloading its versions", name)
        self._serving[name] = error or serving
        root = self.config.model_repository
        for version in wanted:
            old = found.get(version)
            path = root / name / str(version) / serving.model_file
            fresh = old is None or old.state is not State.READY
            stamp = _stamp(path)
            if (
                old is not None
                and old.state in (State.READY, State.FAILED)
                and not changed
                and old.tried == stamp
                and not (retry and old.state is State.FAILED)
            ):
                continue  # nothing about it changed since it was loaded, or failed to
            mv = ModelVersion(name, version, path, tried=stamp)
            if fresh:
                found[version] = mv  # nothing to keep serving meanwhile
            self.metrics.set_model_state(name, version, State.LOADING)
            if error:
                self._fail(mv, error)
            else:
                serving_now = [m for m in found.values() if m.ready and m is not mv]
                await self._load(mv, serving, serving_now)
            if mv.ready:
                found[version] = mv
                if old is not None and old is not mv and old.ready:
                    self._retire(old, "replaced by a new load")
            elif old is not None and old.ready:  # keep serving what worked
                old.tried = stamp
                old.error = f"a reload failed, still serving the previous load: {mv.error}"
                self.metrics.set_model_state(name, version, State.READY)
            else:
                found[version] = mv
        for version, mv in sorted(found.items()):
            if version not in wanted and mv.state is not State.UNLOADED:
                self._retire(mv, "removed from the repository")

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name` (RepositoryModelUnload)."""
        async with self._lock:
            for mv in self.models.get(name, {}).values():
                if mv.state is not State.UNLOADED:
                    self._retire(mv, "unloaded on request")
            self._serving.pop(name, None)
        if self.on_change is not None:
            await self.on_change()

    def _retire(self, mv: ModelVersion, why: str) -> None:
        """No new calls for `mv`; unload it once the calls it has are done."""
        was_ready = mv.ready
        mv.state, mv.error = State.UNLOADED, why
        self.metrics.set_model_state(mv.name, mv.version, State.UNLOADED)
        self.metrics.forget_quality(mv.name, mv.version, MARGINS)
        log.info("model %s version %d: %s; unloading", mv.name, mv.version, why)
        if was_ready:
            task = asyncio.create_task(self._drain_and_close(mv))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _drain_and_close(self, mv: ModelVersion) -> None:
        """Unload `mv` once its last lease is returned (its calls' work is done or dropped
        by then; a batch still in ONNX Runtime finishes before its instance closes)."""
        if mv.users:
            mv.released = asyncio.Event()
            await mv.released.wait()
        if mv.batcher is not None:
            await mv.batcher.close()
        mv.batcher, mv.runners, mv.solo = None, (), None
        log.info("model %s version %d unloaded", mv.name, mv.version)

    async def _load(
        self, mv: ModelVersion, serving: ServingConfig, serving_now: list[ModelVersion]
    ) -> None:
        """Load, check and warm up `mv`; `serving_now` are the model's ready versions (the
        load it replaces included), whose signature it must share unless config.json allows a
        change."""
        # the model's own config.json wins over the server's flags
        max_batch = serving.max_batch_size or self.config.max_batch_size
        delay_ms = serving.max_queue_delay_ms
        if delay_ms is None:
            delay_ms = self.config.max_queue_delay_ms
        instances = serving.instances or self.config.instances
        threads = serving.intra_op_threads or self.config.intra_op_threads
        try:
            await asyncio.to_thread(self._load_version, mv, max_batch, instances, threads)
        except Exception as exc:  # any failure stays with this version alone
            self._fail(mv, f"{type(exc).__name__}: {exc}")
            return
        assert mv.runners and mv.card is not None
        change = self._signature_change(mv, serving, serving_now)
        if change:
            mv.runners, mv.solo = (), None
            self._fail(mv, change, reason="signature")
            return
        mv.batcher = Batcher(
            f"{mv.name}:{mv.version}",
            [runner.run for runner in mv.runners],
            max_batch_size=max_batch,
            max_queue_delay_s=delay_ms / 1000.0,
            max_queue_size=serving.max_queue_size or self.config.max_queue_size,
            metrics=self.metrics,
            inline_run_s=self.config.inline_run_us / 1e6,
            solo=mv.solo.run if mv.solo is not None else None,
            max_batch_values=self._batch_values(mv.card),
        )
        mv.batcher.start()
        mv.state = State.READY
        self.metrics.set_model_state(mv.name, mv.version, State.READY)
        log.info(
            "model %s version %d ready on %s (%s), %d instance(s) x %d thread(s)",
            mv.name,
            mv.version,
            mv.runners[0].provider,
            mv.card.kind,
            len(mv.runners),
            mv.runners[0].threads,
        )

    @staticmethod
    def _signature_change(
        mv: ModelVersion, serving: ServingConfig, serving_now: list[ModelVersion]
    ) -> str:
        """Why `mv` may not serve beside `serving_now` ("" when it may)."""
        if serving.allow_signature_change:
            return ""
        assert mv.card is not None
        for other in sorted(serving_now, key=lambda m: m.version):
            assert other.card is not None
            change = other.card.signature_change(mv.card)
            if change:
                return (
                    f"refused: its signature differs from serving version {other.version}'s "
                    f"({change}); callers of the model would break. Put it under another model "
                    'name, or set "allow_signature_change": true in the model\'s config.json'
                )
        return ""

    def _batch_values(self, card: ModelCard) -> int:
        """The input values one batch may hold: a translation batch stays within one call's
        pixel limit (each call is checked against it on arrival, in output pixels: scale^2
        per source pixel); generators: no limit."""
        if card.kind != "translation":
            return 0
        return self.config.max_translation_pixels * card.channels // card.scale**2

    def _load_version(self, mv: ModelVersion, max_batch: int, instances: int, threads: int) -> None:
        if not mv.path.is_file():
            raise FileNotFoundError(f"{mv.path} is missing")
        device = self.config.device
        provider = choose_providers(device)[0]
        cores = cpu_cores()
        count, threads = plan_instances(provider, instances, threads, cores)
        spinning = self.config.intra_op_spinning
        runners = []
        for _ in range(count):
            runner = Runner(mv.path, device=device, threads=threads, spinning=spinning)
            runner.warm_up((1, max_batch))
            runners.append(runner)
        mv.runners, mv.card = tuple(runners), runners[0].card
        if self.config.solo_session and provider != CUDA and threads < cores:
            mv.solo = Runner(mv.path, device=device, threads=cores, spinning=spinning)
            mv.solo.warm_up((1, max_batch))

    def _fail(self, mv: ModelVersion, error: str, reason: str = "error") -> None:
        # callers see the reason, not where the server keeps its files (the log has both)
        root = str(self.config.model_repository.resolve())
        shown_error = error.replace(root, "<repository>")
        shown_error = shown_error.replace(str(self.config.model_repository), "<repository>")
        mv.state, mv.error = State.FAILED, shown_error
        self.metrics.set_model_state(mv.name, mv.version, State.FAILED)
        self.metrics.model_load_failures.labels(mv.name, reason).inc()
        log.error("model %s version %d failed to load: %s", mv.name, mv.version, error)

    def lease(self, name: str, version: int = 0) -> Lease:
        """The version asked for (0: the highest ready), held until the `async with` ends."""
        return Lease(self, name, version)

    def ready_versions(self, name: str) -> list[ModelVersion]:
        """The model's ready versions, lowest first ([] for a model the server lacks)."""
        found = self.models.get(name, {})
        return [found[v] for v in sorted(found) if found[v].ready]

    def get(self, name: str, version: int = 0) -> ModelVersion:
        """The version asked for, or the highest ready one for 0."""
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model: no model {shown(name)} (models: {known})")
        found = self.models[name]
        if version:
            if version not in found:
                raise ModelNotFound(
                    f"version: model {name!r} has no version {version} (versions: {sorted(found)})"
                )
            mv = found[version]
            if not mv.ready:  # loading, failed, or unloaded (removed): UNAVAILABLE
                raise ModelUnavailable(
                    f"model {name!r} version {version} is {mv.state}"
                    + (f": {mv.error}" if mv.error else "")
                )
            return mv
        # on every call: the highest ready version, without sorting the model's versions
        latest = max((v for v, m in found.items() if m.ready), default=0)
        if not latest:
            raise ModelUnavailable(
                f"model {name!r}: no version is ready ("
                + "; ".join(f"{v}: {m.state} {m.error}" for v, m in sorted(found.items()))
                + ")"
            )
        return found[latest]

    @property
    def any_ready(self) -> bool:
        return any(self.ready_versions(name) for name in self.models)

    def batchers(self) -> list[Batcher]:
        return [mv.batcher for vs in self.models.values() for mv in vs.values() if mv.batcher]

    def activity(self) -> tuple[int, bool]:
        """(batches run so far by every loaded version, whether all are idle now: nothing
        queued, nothing running). The idle heap trim and the quality probe's gate read it."""
        batchers = self.batchers()
        return sum(b.runs for b in batchers), all(b.idle for b in batchers)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for vs in self.models.values():
            for mv in vs.values():
                if mv.batcher is not None:
                    await mv.batcher.close()
