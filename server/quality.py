"""The quality monitor: does each served model still make what its card says?

A model card (`ganserve.export.metadata`) carries the independent judge's figures of the
exported generator (`provenance.evaluation.independent`: Frechet ratio, class shares, a
conditional model's class accuracy). The monitor makes a fixed, seeded probe set from a loaded
version (`PROBE_SEED`, images 0 .. n-1; a conditional model balanced over its classes), scores
it with the same judge exported to ONNX (`judges/judge.onnx`, made by
`python -m ganserve.export.judge`; no torch here) against the reference statistics stored
beside it, and compares the figures with the card's by `MARGINS`, the one home of that rule.

- `ganserve serve --quality-probe-seconds N` probes every ready generator version every N
  seconds and exports `ganserve_model_quality{model,version,metric}`, the card's figure as
  `ganserve_model_quality_card`, and `ganserve_model_quality_within_card` (1 or 0) for the
  alerting rule (deploy/prometheus/alerts.yml, GanserveModelQuality).
- `ganserve models check MODEL[:VERSION]` runs the same probe on a file in the repository and
  exits 1 when a figure is out of its margin: a deploy gate.

The probe runs at the lowest priority (`Monitor`): on a thread of its own at nice 19, in chunks
that start only while the version's batcher is idle, so a caller's batch never waits for one.
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
PROBE_IMAGES = 1000  # as many as the cards' evaluations took (`samples`)
CHUNK = 50  # images per probe run: what a caller arriving meanwhile may wait behind, at most
IDLE_POLL_S = 0.005  # how often a probe chunk looks for an idle batcher
PATIENCE_S = 2.0  # a chunk waits this long for one; then the version's probe is put off
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


def judge_features(session: Any, images: np.ndarray, batch: int = 250) -> tuple[np.ndarray, ...]:
    """(features [N, 96], predicted digits [N]) of uint8 NHWC images by the ONNX judge."""
    feats, preds = [], []
    for lo in range(0, len(images), batch):
        f, logits = session.run(None, {"image": images[lo : lo + batch]})
        feats.append(f)
        preds.append(logits.argmax(1))
    return np.concatenate(feats), np.concatenate(preds)


def card_figures(card: ModelCard) -> dict[str, float]:
    """The judge's figures on `card` that the probe can check ({} when it has none)."""
    evaluation = card.provenance.get("evaluation") or {}
    judged = evaluation.get("independent") or {}
    return {k: float(judged[k]) for k in MARGINS if isinstance(judged.get(k), (int, float))}


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

    def score(self, images: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
        """The figures of uint8 NHWC digits, as the cards hold them (labels: those asked for)."""
        features, predicted = judge_features(self.session, images)
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
    images: int = PROBE_IMAGES,
    before_chunk: Callable[[], None] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(figures, card's figures) of `images` probe images made by `run` (a version's session),
    CHUNK at a time, `before_chunk()` before each."""
    out = []
    for lo in range(0, images, CHUNK):
        if before_chunk is not None:
            before_chunk()
        out.append(run(probe_feeds(card, lo, min(CHUNK, images - lo))))
    pixels = np.concatenate(out)
    labels = balanced_labels(0, images, card.num_classes) if card.kind == "conditional" else None
    return judge.score(pixels, labels), card_figures(card)


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
        images: int = PROBE_IMAGES,
    ) -> None:
        self.repo, self.metrics, self.judge = repo, metrics, judge
        self.every_s, self.images = every_s, images
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
                try:
                    reports.append(await self.probe_version(mv))
                except Busy:  # callers keep it busy: the other versions go first
                    log.debug("quality probe of %s version %d put off: busy", name, mv.version)
                except Exception:  # a version unloaded mid-probe, or a model that fails
                    log.exception("quality probe of %s version %d failed", name, mv.version)
        return reports

    async def probe_version(self, mv: ModelVersion) -> Report:
        """Probe `mv` (held loaded meanwhile) and publish its gauges."""
        assert mv.card is not None and mv.runners
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        async with self.repo.lease(mv.name, mv.version):
            chunk = self._chunk_gate(mv.batcher)
            figures, card = await loop.run_in_executor(
                self._pool, probe, self.judge, mv.card, mv.runners[0].run, self.images, chunk
            )
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

    def _chunk_gate(self, batcher: Any) -> Callable[[], None]:
        """A function for the probe thread that returns once `batcher` is idle: nothing queued
        and nothing running. It reads two counters the event loop writes; a batch that starts
        just after the read runs beside one probe chunk, at nice 19. After PATIENCE_S of
        waiting it raises Busy (the probe is put off); once the monitor stops, it raises
        CancelledError, so the probe ends at its next chunk."""

        def wait() -> None:
            give_up = time.monotonic() + PATIENCE_S
            while not self._stop.is_set() and batcher is not None and not batcher.idle:
                if time.monotonic() > give_up:
                    raise Busy
                time.sleep(IDLE_POLL_S)
            if self._stop.is_set():
                raise asyncio.CancelledError("the quality monitor stopped")

        return wait


def check_main(argv: list[str]) -> int:
    """`ganserve models check MODEL[:VERSION]`: probe a version's file in the repository
    against its card. Status 0 within every margin, 1 out of one, 2 a usage or setup error."""
    import argparse

    from ganserve.export.metadata import ModelCardError
    from ganserve.export.repository import RepositoryError, read_serving_config, versions
    from ganserve.server.runner import Runner

    p = argparse.ArgumentParser(
        prog="ganserve models check",
        description="Probe a model version's quality against its card (a deploy gate): "
        "exit 0 when every figure is within its margin, 1 when one is not.",
    )
    p.add_argument("model", metavar="MODEL[:VERSION]", help="the model; VERSION: the highest")
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--judge", type=Path, default=Path("judges/judge.onnx"))
    p.add_argument("--images", type=int, default=PROBE_IMAGES, help="images in the probe")
    p.add_argument("--device", default="auto", help="where the generator runs: auto, cpu, cuda")
    args = p.parse_args(argv)
    name, _, version_text = args.model.partition(":")
    if args.images < 200:
        p.error("--images: at least 200 (a covariance of 96 features needs more rows)")
    try:
        model_dir = args.model_repository / name
        found = versions(model_dir) if model_dir.is_dir() else []
        if not found:
            raise RepositoryError(f"{model_dir}: no model versions there")
        version = int(version_text) if version_text else found[-1]
        if version not in found:
            raise RepositoryError(f"model {name!r} has no version {version} (versions: {found})")
        path = model_dir / str(version) / read_serving_config(model_dir).model_file
        judge = Judge(args.judge)
        runner = Runner(path, device=args.device, threads=0)
    except (RepositoryError, ModelCardError, FileNotFoundError, ValueError) as exc:
        print(f"ganserve models check: {exc}", file=sys.stderr)
        return 2
    if not probed(runner.card):
        print(
            f"ganserve models check: {name}:{version} is a {runner.card.kind} model without "
            "judge figures on its card: the probe checks 32x32 digit generators",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    figures, card = probe(judge, runner.card, runner.run, args.images)
    problems = within(figures, card)
    print(f"{name}:{version}  {args.images} probe images in {time.perf_counter() - started:.1f} s")
    print(f"  {'metric':18} {'probe':>8} {'card':>8}  margin")
    for metric, got in figures.items():
        rule, margin = MARGINS[metric]
        shown = {"max_ratio": f"<= {margin}x card", "min_diff": f">= card - {margin}"}
        want = f"{card[metric]:8.3f}" if metric in card else f"{'-':>8}"
        print(f"  {metric:18} {got:8.3f} {want}  {shown.get(rule, f'<= card + {margin}')}")
    for problem in problems:
        print(f"  OUT: {problem}")
    print("  within the card's figures" if not problems else "  NOT within the card's figures")
    return 1 if problems else 0
