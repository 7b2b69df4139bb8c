"""The quality monitor: does each served model still make what its card says?

A model card (`ganserve.export.metadata`) carries the independent judge's figures of the
exported generator (`provenance.evaluation.independent`: Frechet ratio, class shares, a
conditional model's class accuracy). The monitor makes a fixed, seeded probe set from a loaded
version (`PROBE_SEED`, images 0 .. n-1, n the card's evaluation `samples`; a conditional model
balanced over its classes), scores it with the same judge exported to ONNX
(`judges/judge.onnx`, made by `python -m ganserve.export.judge`; no torch here) against the
reference statistics stored beside it, and compares the figures with the card's by `MARGINS`,
the one home of that rule. It catches a file that no longer makes what its own card says
(corrupted weights, a bad export, a file carrying another model's card); a file that carries
its own honest card is judged by that card.

- `ganserve serve --quality-probe-seconds N` probes every ready generator version every N
  seconds and exports `ganserve_model_quality{model,version,metric}`, the card's figure as
  `ganserve_model_quality_card`, `ganserve_model_quality_within_card` (1 or 0) and the time
  of the last probe, for the alerting rules (deploy/prometheus/ganserve-rules.yaml:
  GanserveModelQualityOffCard, GanserveModelQualityUnchecked).
- `ganserve models check MODEL[:VERSION]` runs the same probe on a file in the repository and
  exits 1 when a figure is out of its margin: a deploy gate.

The probe keeps out of the callers' way (`Monitor`): it runs on a thread of its own at nice 19,
with a one-thread CPU session of its own (so no caller's session, thread pool or CUDA stream is
shared), in chunks that start only once the whole server has been idle for QUIET_S.
Translation models are not probed: their figures need source images, which the server has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganserve.contract import balanced_labels
from ganserve.latent import latents

if TYPE_CHECKING:
    from ganserve.export.metadata import ModelCard
    from ganserve.server.metrics import Metrics
    from ganserve.server.models import ModelRepository, ModelVersion

log = logging.getLogger("ganserve.quality")

PROBE_SEED = 20261206  # the probe set: images 0 .. n-1 of this seed, on every version
# as many images as the card's evaluation took (its `samples`; 1,000 on the shipped cards): the
# Frechet distance is biased upward on fewer (measured: dcgan 4.71 at 200 images, 1.34-1.61 at
# 1,000, card 1.63), so a smaller probe would flag healthy models
PROBE_IMAGES = 1000
MAX_PROBE_IMAGES = 10_000  # a card asking for more is probed with this many
# images per probe run and per judge run (~16 ms and ~40 ms of one core on the 2-core VM): what
# a caller arriving meanwhile shares the CPU with, at most
CHUNK = 50
# A chunk starts only once the whole server has run nothing and held nothing queued for QUIET_S.
# Measured on the 2-core VM (docs/benchmarks.md, "the quality probe under load"): probing
# beside a loaded server cost its callers 5-22% at 64 x 1 however low the probe's priority
# (0.84x on a nice-19 thread gated on its own model's batcher; from a process of its own,
# 0.78-0.82x at nice 19 and 0.85-0.95x at SCHED_IDLE), so the probe keeps out of load.
QUIET_S = 0.1
IDLE_POLL_S = 0.005  # how often a waiting chunk looks again
PATIENCE_S = 2.0  # a chunk waits this long for quiet; then the version's probe is put off
DIGITS = 10
# How far a probe's figure may be from its card's before the version counts as broken: a
# figure above `worse_above` x card + slack (the Frechet ratio: lower is better) or below
# card - slack (shares of the rarest class, class accuracy: higher is better), or above card +
# slack (the commonest class's share). Measured on the shipped dcgan, cgan and vae, probes of
# three seeds landed at 0.82x-1.24x the card's Frechet ratio and within 0.015 of its shares
# and accuracy (docs/serving.md, "Quality monitor"); shuffled weights leave them far behind.
MARGINS: dict[str, tuple[str, float]] = {
    "frechet_ratio": ("max_ratio", 1.5),  # at most 1.5x the card's
    "min_class_share": ("min_diff", 0.04),  # at least the card's - 0.04
    "max_class_share": ("max_diff", 0.04),  # at most the card's + 0.04
    "class_accuracy": ("min_diff", 0.05),  # at least the card's - 0.05
}


class Busy(Exception):
    """A version's batcher stayed busy for PATIENCE_S: its probe waits for the next round."""


class Gone(Exception):
    """The version was unloaded while it was probed: the probe is dropped."""


def reference_path(judge: Path) -> Path:
    """Where the reference statistics of the judge at `judge` live (beside it)."""
    return Path(judge).with_suffix(".reference.npz")


def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D], in float64."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_from_stats(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    The trace of the matrix square root is taken from the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2), which share them with S_a S_b: stable, and no scipy needed.
    """
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


def judge_features(
    session: Any,
    images: np.ndarray,
    batch: int = 250,
    before_batch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, ...]:
    """(features [N, 96], predicted digits [N]) of uint8 NHWC images by the ONNX judge,
    `batch` at a time, `before_batch()` before each."""
    feats, preds = [], []
    for lo in range(0, len(images), batch):
        if before_batch is not None:
            before_batch()
        f, logits = session.run(None, {"image": images[lo : lo + batch]})
        feats.append(f)
        preds.append(logits.argmax(1))
    return np.concatenate(feats), np.concatenate(preds)


def card_figures(card: ModelCard) -> dict[str, float]:
    """The judge's finite figures on `card` that the probe can check ({} when it has none)."""
    evaluation = card.provenance.get("evaluation") or {}
    judged = evaluation.get("independent") or {}
    return {
        k: float(judged[k])
        for k in MARGINS
        if isinstance(judged.get(k), (int, float)) and np.isfinite(judged[k])
    }


def probe_images(card: ModelCard) -> int:
    """How many images a probe of `card`'s model makes: as many as its evaluation took."""
    samples = (card.provenance.get("evaluation") or {}).get("samples", PROBE_IMAGES)
    if not isinstance(samples, int) or samples < 200:  # too few for 96 features' covariance
        return PROBE_IMAGES
    return min(samples, MAX_PROBE_IMAGES)


def probed(card: ModelCard) -> bool:
    """Whether the monitor can probe a version of `card`: a digit generator with figures."""
    return (
        card.kind != "translation"
        and card.uint8_output
        and (card.height, card.width, card.channels) == (32, 32, 1)
        and (card.kind == "unconditional" or card.num_classes == DIGITS)
        and bool(card_figures(card))
    )


def probe_feeds(card: ModelCard, lo: int, n: int) -> dict[str, np.ndarray]:
    """The generator's inputs for probe images lo .. lo + n - 1."""
    feeds = {"z": latents(PROBE_SEED, lo, n, card.latent_size)}
    if card.kind == "conditional":
        feeds["label"] = balanced_labels(lo, n, card.num_classes)
    return feeds


def within(figures: dict[str, float], card: dict[str, float]) -> list[str]:
    """The figures out of their margin against the card's, each as one line ([] when all in)."""
    problems = []
    for metric, got in figures.items():
        if metric not in card:
            continue
        rule, margin = MARGINS[metric]
        want = card[metric]
        if rule == "max_ratio" and got > want * margin:
            problems.append(f"{metric} {got:.3f}: above {margin}x the card's {want:.3f}")
        elif rule == "min_diff" and got < want - margin:
            problems.append(f"{metric} {got:.3f}: below the card's {want:.3f} - {margin}")
        elif rule == "max_diff" and got > want + margin:
            problems.append(f"{metric} {got:.3f}: above the card's {want:.3f} + {margin}")
    return problems


@dataclass(frozen=True)
class Report:
    """One probe of one version: its figures, the card's, and those out of their margin."""

    model: str
    version: int
    figures: dict[str, float]
    card: dict[str, float]
    problems: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems


class Judge:
    """The ONNX judge and its reference statistics; `score` is thread-safe."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        reference = reference_path(path)
        for needed in (path, reference):
            if not needed.is_file():
                raise FileNotFoundError(
                    f"{needed}: missing; `python -m ganserve.export.judge` makes it"
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        with np.load(reference) as ref:
            self.mean, self.cov = ref["mean"], ref["cov"]
            self.real_vs_real = float(ref["real_vs_real"])

    def score(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        before_batch: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """The figures of uint8 NHWC digits, as the cards hold them (labels: those asked for),
        judged CHUNK images at a time, `before_batch()` before each."""
        features, predicted = judge_features(self.session, images, CHUNK, before_batch)
        fd = frechet_from_stats(*stats(features), self.mean, self.cov)
        share = np.bincount(predicted, minlength=DIGITS) / len(images)
        figures = {
            "frechet_ratio": round(fd / self.real_vs_real, 3),
            "min_class_share": round(float(share.min()), 4),
            "max_class_share": round(float(share.max()), 4),
        }
        if labels is not None:
            figures["class_accuracy"] = round(float((predicted == labels).mean()), 4)
        return figures


def probe(
    judge: Judge,
    card: ModelCard,
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    before_chunk: Callable[[], None] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(figures, card's figures) of `probe_images(card)` probe images made by `run` and
    scored by `judge`, CHUNK at a time, `before_chunk()` before each run of either."""
    images = probe_images(card)
    out = []
    for lo in range(0, images, CHUNK):
        if before_chunk is not None:
            before_chunk()
        out.append(run(probe_feeds(card, lo, min(CHUNK, images - lo))))
    pixels = np.concatenate(out)
    labels = balanced_labels(0, images, card.num_classes) if card.kind == "conditional" else None
    return judge.score(pixels, labels, before_chunk), card_figures(card)


def _lowest_priority() -> None:
    """Make the calling thread the last the kernel runs (nice 19; Linux: per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class Monitor:
    """Probes every ready generator version of `repo` every `every_s` seconds, at the lowest
    priority, and sets the quality gauges of `metrics`."""

    def __init__(
        self,
        repo: ModelRepository,
        metrics: Metrics,
        judge: Judge,
        every_s: float,
    ) -> None:
        self.repo, self.metrics, self.judge = repo, metrics, judge
        self.every_s = every_s
        self._pool = ThreadPoolExecutor(1, "quality-probe", initializer=_lowest_priority)
        self._stop = threading.Event()  # set when `run` ends: a running probe stops at a chunk
        self.reports: dict[tuple[str, int], Report] = {}

    async def run(self) -> None:
        """Probe, sleep `every_s`, forever (cancel to stop)."""
        try:
            while True:
                await self.probe_all()
                await asyncio.sleep(self.every_s)
        finally:
            self._stop.set()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def probe_all(self) -> list[Report]:
        """One probe of each ready, probed version; a failed probe is logged and skipped."""
        reports = []
        for name in list(self.repo.models):
            for mv in self.repo.ready_versions(name):
                if mv.card is None or not probed(mv.card):
                    continue
                self.metrics.saw_quality_version(mv.name, mv.version)
                try:
                    reports.append(await self.probe_version(mv))
                except Busy:  # callers keep it busy: the other versions go first
                    log.debug("quality probe of %s version %d put off: busy", name, mv.version)
                except Gone:
                    log.debug("quality probe of %s version %d dropped: unloaded", name, mv.version)
                except Exception:  # a model that fails to run
                    log.exception("quality probe of %s version %d failed", name, mv.version)
        return reports

    async def probe_version(self, mv: ModelVersion) -> Report:
        """Probe `mv` on a session of the probe's own and publish its gauges. It holds no
        lease: an unload goes ahead, and the probe is dropped at its next chunk (Gone)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        figures, card = await loop.run_in_executor(self._pool, self._probe, mv)
        problems = within(figures, card)
        report = Report(mv.name, mv.version, figures, card, problems, time.perf_counter() - started)
        if not mv.ready:  # unloaded while it was probed: its series are gone, and stay so
            return report
        self.reports[(mv.name, mv.version)] = report
        self.metrics.set_quality(mv.name, mv.version, figures, card, report.ok)
        if problems:
            log.warning(
                "model %s version %d makes worse than its card: %s",
                mv.name,
                mv.version,
                "; ".join(problems),
            )
        else:
            log.info(
                "quality probe of %s version %d in %.1f s: %s",
                mv.name,
                mv.version,
                report.seconds,
                figures,
            )
        return report

    def _probe(self, mv: ModelVersion) -> tuple[dict[str, float], dict[str, float]]:
        """On the probe thread: a one-thread CPU session of `mv`'s file (run on this nice-19
        thread, sharing nothing with the callers' sessions), then the probe through it."""
        from ganserve.server.runner import Runner

        runner = Runner(mv.path, device="cpu", threads=1)
        return probe(self.judge, runner.card, runner.run, self._chunk_gate(mv))

    def _chunk_gate(self, mv: ModelVersion) -> Callable[[], None]:
        """A function for the probe thread that returns once the whole server is quiet: every
        batcher idle (nothing queued, nothing running) at the start and the end of QUIET_S,
        and no batch run between (their `runs` counters unchanged), or idle with nothing run
        since the previous chunk went (so a probe of an idle server does not wait QUIET_S per
        chunk). It reads counters the event loop writes; a call that arrives just after runs
        beside one chunk (CHUNK images) at nice 19. It raises Busy after PATIENCE_S without
        quiet (the probe is put off), Gone once `mv` is unloaded, and CancelledError once the
        monitor stops, so the probe ends at its next chunk."""

        def check() -> None:
            if self._stop.is_set():
                raise asyncio.CancelledError("the quality monitor stopped")
            if not mv.ready or mv.batcher is None:
                raise Gone

        def quiet_since(runs: int | None) -> int | None:
            """The server's run count if it is idle (and has run nothing since `runs`)."""
            try:
                now, idle = self.repo.activity()
            except RuntimeError:  # the repository changed under the read: look again
                return None
            return now if idle and (runs is None or now == runs) else None

        last: list[int] = []  # the run count when the previous chunk went

        def wait() -> None:
            give_up = time.monotonic() + PATIENCE_S
            while True:
                check()
                runs = quiet_since(None)
                if runs is not None and last and runs == last[0]:
                    return  # nothing ran since the previous chunk went: still quiet
                if runs is not None:
                    time.sleep(QUIET_S)
                    check()
                    if quiet_since(runs) is not None:
                        last[:] = [runs]
                        return
                if time.monotonic() > give_up:
                    raise Busy
                time.sleep(IDLE_POLL_S)

        return wait


def check_main(argv: list[str]) -> int:
    """`ganserve models check MODEL[:VERSION]`: probe a version's file in the repository
    against its card, as the server's monitor does (a one-thread CPU session). Status 0 within
    every margin, 1 out of one, 2 a usage or setup error (no such model or version, a file
    that does not load or run, a model the probe cannot check)."""
    import argparse

    from ganserve.export.repository import check_name, read_serving_config, versions
    from ganserve.server.runner import Runner

    p = argparse.ArgumentParser(
        prog="ganserve models check",
        description="Probe a model version's quality against its card (a deploy gate): "
        "exit 0 when every figure is within its margin, 1 when one is not.",
    )
    p.add_argument("model", metavar="MODEL[:VERSION]", help="the model; VERSION: the highest")
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--judge", type=Path, default=Path("judges/judge.onnx"))
    args = p.parse_args(argv)
    name, _, version_text = args.model.partition(":")

    def fail(message: object) -> int:
        print(f"ganserve models check: {message}", file=sys.stderr)
        return 2

    try:
        model_dir = args.model_repository / check_name(name)
        found = versions(model_dir) if model_dir.is_dir() else []
        if not found:
            return fail(f"{model_dir}: no model versions there")
        if version_text and not version_text.isdigit():
            return fail(f"version: {version_text!r}; a version number")
        version = int(version_text) if version_text else found[-1]
        if version not in found:
            return fail(f"model {name!r} has no version {version} (versions: {found})")
        path = model_dir / str(version) / read_serving_config(model_dir).model_file
        judge = Judge(args.judge)
        runner = Runner(path, device="cpu", threads=1)
    except Exception as exc:  # a bad name, a missing or corrupt file: never "out of margin"
        return fail(exc)
    if not probed(runner.card):
        return fail(
            f"{name}:{version} is a {runner.card.kind} model without judge figures on its card; "
            "the probe checks 32x32 digit generators"
        )
    started = time.perf_counter()
    try:
        figures, card = probe(judge, runner.card, runner.run)
    except Exception as exc:  # the model fails to run
        return fail(f"{name}:{version} failed to run: {exc}")
    problems = within(figures, card)
    seconds = time.perf_counter() - started
    print(f"{name}:{version}  {probe_images(runner.card)} probe images in {seconds:.1f} s")
    print(f"  {'metric':18} {'probe':>8} {'card':>8}  margin")
    shown = {"max_ratio": "<= {}x card", "min_diff": ">= card - {}", "max_diff": "<= card + {}"}
    for metric, got in figures.items():
        rule, margin = MARGINS[metric]
        want = f"{card[metric]:8.3f}" if metric in card else f"{'-':>8}"
        print(f"  {metric:18} {got:8.3f} {want}  {shown[rule].format(margin)}")
    for problem in problems:
        print(f"  OUT: {problem}")
    print("  within the card's figures" if not problems else "  NOT within the card's figures")
    return 1 if problems else 0
