"""The quality monitor (issue #26 point 2): the shipped generators probe within their cards,
a deliberately broken version (shuffled weights, the good version's card) does not, and the
gauges, the alerting rule and `ganserve models check` all say so, the good version untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ganserve.client import Client
from ganserve.server import quality
from ganserve.server.config import ServerConfig, ServerConfigError
from ganserve.server.metrics import Metrics, State
from ganserve.server.models import ModelRepository, ModelVersion
from ganserve.server.runner import Runner
from tests.servers import BASE, CGAN, DCGAN, MODELS, VAE, RunningServer, until
from tests.test_prometheus_rules import RULES, promtool

JUDGE = MODELS.parent / "judges" / "judge.onnx"


@pytest.fixture(scope="module")
def judge() -> quality.Judge:
    return quality.Judge(JUDGE)


def broken_repository(root: Path, how: str = "shuffled") -> Path:
    """mnist-dcgan version 1 as shipped, and version 2: the same graph and card with every
    weight tensor's values shuffled (seeded) or zeroed, a valid ONNX file that draws no digits."""
    shutil.copytree(MODELS / DCGAN / "1", root / DCGAN / "1")
    model = onnx.load(str(MODELS / DCGAN / "1" / "model.onnx"))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.size > 16 and values.dtype.kind == "f":  # weights, not shapes or constants
            if how == "shuffled":
                broken = rng.permutation(values.ravel()).reshape(values.shape)
            else:
                broken = np.zeros_like(values)
            init.CopyFrom(numpy_helper.from_array(broken.astype(values.dtype), init.name))
    (root / DCGAN / "2").mkdir(parents=True)
    onnx.save(model, str(root / DCGAN / "2" / "model.onnx"))
    return root


@pytest.mark.parametrize("model", [DCGAN, CGAN, VAE])
def test_each_shipped_generator_probes_within_its_card(judge: quality.Judge, model: str) -> None:
    runner = Runner(MODELS / model / "1" / "model.onnx", device="cpu", threads=1)
    assert quality.probed(runner.card)
    figures, card = quality.probe(judge, runner.card, runner.run)
    assert set(card) <= set(figures) and "frechet_ratio" in card
    assert quality.within(figures, card) == [], (figures, card)
    assert ("class_accuracy" in figures) == (model == CGAN)


def test_the_margins_flag_each_figure_on_its_side() -> None:
    card = {"frechet_ratio": 2.0, "min_class_share": 0.08, "max_class_share": 0.12}
    card["class_accuracy"] = 0.95
    assert quality.within({**card, "frechet_ratio": 2.9}, card) == []
    assert quality.within({**card, "frechet_ratio": 3.1}, card)[0].startswith("frechet_ratio")
    assert quality.within({**card, "min_class_share": 0.03}, card)[0].startswith("min_class")
    assert quality.within({**card, "max_class_share": 0.17}, card)[0].startswith("max_class")
    assert quality.within({**card, "max_class_share": 0.15}, card) == []
    assert quality.within({**card, "class_accuracy": 0.91}, card) == []
    assert quality.within({**card, "class_accuracy": 0.89}, card)[0].startswith("class_acc")


def test_a_card_without_finite_figures_or_enough_samples_is_read_safely() -> None:
    card = Runner(MODELS / DCGAN / "1" / "model.onnx", device="cpu").card
    evaluation = card.provenance["evaluation"]
    nan = {**evaluation, "independent": {**evaluation["independent"], "frechet_ratio": "nan"}}
    nan["independent"]["min_class_share"] = float("nan")
    odd = replace(card, provenance={**card.provenance, "evaluation": nan})
    assert "frechet_ratio" not in quality.card_figures(odd)
    assert "min_class_share" not in quality.card_figures(odd)  # NaN is never out of margin
    assert "max_class_share" in quality.card_figures(odd)
    assert quality.probe_images(card) == 1000
    few = replace(card, provenance={**card.provenance, "evaluation": {"samples": 50}})
    huge = replace(card, provenance={**card.provenance, "evaluation": {"samples": 10**9}})
    assert quality.probe_images(few) == 1000 and quality.probe_images(huge) == 10_000


def test_the_chunk_gate_waits_for_a_quiet_server_puts_off_when_busy_and_drops_when_unloaded(
    judge: quality.Judge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality, "PATIENCE_S", 0.3)
    monkeypatch.setattr(quality, "QUIET_S", 0.05)
    # the gate reads the repository's activity, which reads only these of each Batcher
    own, other = SimpleNamespace(idle=True, runs=0), SimpleNamespace(idle=True, runs=0)
    repo = SimpleNamespace(batchers=lambda: [own, other])
    repo.activity = lambda: ModelRepository.activity(repo)  # type: ignore[arg-type]
    monitor = quality.Monitor(repo, Metrics(), judge, 1.0)  # type: ignore[arg-type]
    mv = ModelVersion(DCGAN, 1, MODELS / DCGAN / "1" / "model.onnx", State.READY)
    mv.batcher = own  # type: ignore[assignment]
    gate = monitor._chunk_gate(mv)
    started = time.monotonic()
    gate()  # quiet: goes once it has stayed so for QUIET_S
    assert time.monotonic() - started >= 0.05
    started = time.monotonic()
    gate()  # nothing ran since the previous chunk went: at once
    assert time.monotonic() - started < 0.05
    other.idle = False  # another model's callers keep the server busy: this probe waits too
    with pytest.raises(quality.Busy):
        gate()
    other.idle = True

    def busy_between_looks(seconds: float) -> None:  # a call ran and ended inside the window
        other.runs += 1
        real_sleep(seconds)

    real_sleep = time.sleep
    monkeypatch.setattr(quality.time, "sleep", busy_between_looks)
    with pytest.raises(quality.Busy):
        monitor._chunk_gate(mv)()  # a new probe's first chunk: it waits out QUIET_S
    monkeypatch.setattr(quality.time, "sleep", real_sleep)
    gate()
    mv.state = State.UNLOADED
    with pytest.raises(quality.Gone):
        gate()


FORGET_UNDER_WORKERS = """
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from ganserve.server import quality
from ganserve.server.metrics import Metrics
metrics = Metrics()
metrics.set_quality("m", 2, {"frechet_ratio": 40.0}, {"frechet_ratio": 1.6}, False)
metrics.forget_quality("m", 2, quality.MARGINS)
registry = CollectorRegistry()
MultiProcessCollector(registry)
print(generate_latest(registry).decode())
"""


def test_under_workers_a_forgotten_version_reads_nan(tmp_path: Path) -> None:
    """prometheus_client cannot remove a series in multiprocess mode (chosen at import, so in
    a process of its own): the gauges of an unloaded version read NaN, which no rule fires on."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    argv = [sys.executable, "-c", FORGET_UNDER_WORKERS]
    text = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    assert 'ganserve_model_quality_within_card{model="m",version="2"} NaN' in text
    assert 'ganserve_model_quality{metric="frechet_ratio",model="m",version="2"} NaN' in text


def test_translation_models_are_not_probed() -> None:
    card = Runner(MODELS / "mnist-edges2digits" / "1" / "model.onnx", device="cpu").card
    assert not quality.probed(card)


@pytest.mark.parametrize("how", ["shuffled", "zeroed"])
def test_a_broken_version_moves_the_gauge_and_fires_the_rule(tmp_path: Path, how: str) -> None:
    repo = broken_repository(tmp_path / "models", how)
    config = replace(
        BASE,
        model_repository=repo,
        quality_probe_seconds=0.2,
        quality_judge=JUDGE,
        model_control="explicit",
    )
    running = RunningServer(config)
    try:
        within = "ganserve_model_quality_within_card"

        def probed_both() -> bool:
            text = running.metrics()
            return all(f'{within}{{model="{DCGAN}",version="{v}"}}' in text for v in (1, 2))

        until(probed_both, "a quality probe of both versions", seconds=60)
        assert running.metric(within, model=DCGAN, version="1") == 1
        assert running.metric(within, model=DCGAN, version="2") == 0
        ratio = "ganserve_model_quality"
        good = running.metric(ratio, model=DCGAN, version="1", metric="frechet_ratio")
        bad = running.metric(ratio, model=DCGAN, version="2", metric="frechet_ratio")
        card = running.metric(
            "ganserve_model_quality_card", model=DCGAN, version="2", metric="frechet_ratio"
        )
        assert good <= 1.5 * card < 1.5 * 1.5 * card < bad, (good, card, bad)
        probes = "ganserve_model_quality_probes_total"
        assert running.metric(probes, model=DCGAN, version="1") >= 1
        stamp = "ganserve_model_quality_probe_timestamp_seconds"
        assert abs(running.metric(stamp, model=DCGAN, version="2") - time.time()) < 60
        # callers of the good version are untouched: it still serves, and is still within
        reply = running.stub.Sample(quality_request(), timeout=30)
        assert reply.images.shape[0] == 8
        report = running.server.quality.reports[(DCGAN, 2)]
        assert not report.ok and any(p.startswith("frechet_ratio") for p in report.problems)
        scraped = running.metrics()
        # an unloaded model's quality series go with it: no alert on a version that is gone
        with Client(running.address, timeout=30) as client:
            client.unload_model(DCGAN)
        after = running.metrics()
        for series in (within, "ganserve_model_quality", "ganserve_model_quality_card", stamp):
            assert series + "{" not in after, series
        assert probes + "{" not in after
    finally:
        running.stop(grace=1)
    rule_test_on(scraped, tmp_path)


def quality_request():
    from ganserve.v1 import ganserve_pb2 as pb

    return pb.SampleRequest(model=DCGAN, version=1, count=8, seed=3)


def rule_test_on(scraped: str, tmp_path: Path) -> None:
    """The alerting rule, fed the gauge values the server just exported, fires for the broken
    version and not for the good one (promtool test rules)."""
    tool = promtool()
    series = []
    for line in scraped.splitlines():
        if line.startswith("ganserve_model_quality_within_card{"):
            head, value = line.rsplit(" ", 1)
            labels = head[head.index("{") + 1 : -1]
            series.append((f'ganserve_model_quality_within_card{{job="ganserve",{labels}}}', value))
    assert len(series) == 2
    lines = [
        "rule_files:",
        f"  - {RULES / 'ganserve-rules.yaml'}",
        "evaluation_interval: 1m",
        "tests:",
        "  - interval: 1m",
        "    input_series:",
    ]
    for name, value in series:
        lines += [f"      - series: '{name}'", f"        values: '{float(value):g}x15'"]
    lines += [
        "    alert_rule_test:",
        "      - alertname: GanserveModelQualityOffCard",
        "        eval_time: 12m",
        "        exp_alerts:",
        "          - exp_labels:",
        "              severity: page",
        f"              model: {DCGAN}",
        '              version: "2"',
        "            exp_annotations:",
        f'              summary: "{DCGAN} version 2 makes worse than its model card says"',
    ]
    test = tmp_path / "quality.test.yaml"
    test.write_text("\n".join(lines) + "\n")
    done = subprocess.run([tool, "test", "rules", str(test)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_models_check_is_a_deploy_gate(tmp_path: Path) -> None:
    repo = broken_repository(tmp_path / "models")

    def check(target: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ganserve.cli", "models", "check", target]
        argv += ["--model-repository", str(repo), "--judge", str(JUDGE)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    good = check(f"{DCGAN}:1")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "within the card's figures" in good.stdout and "frechet_ratio" in good.stdout
    bad = check(DCGAN)  # the highest version: 2
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{DCGAN}:2" in bad.stdout and "OUT: frechet_ratio" in bad.stdout
    missing = check(f"{DCGAN}:9")
    assert missing.returncode == 2 and "no version 9" in missing.stderr
    outside = check("../models")
    assert outside.returncode == 2 and "model name" in outside.stderr
    # a client option ahead of the action still runs the check, or refuses: never a silent 0
    argv = [sys.executable, "-m", "ganserve.cli", "models", "--server", "localhost:1", "check"]
    ahead = subprocess.run([*argv, DCGAN], capture_output=True, text=True, timeout=120)
    assert ahead.returncode == 2 and "unrecognized arguments" in ahead.stderr
    corrupt = repo / DCGAN / "3"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"not an onnx file")
    bad_file = check(f"{DCGAN}:3")
    assert bad_file.returncode == 2 and "Traceback" not in bad_file.stderr


def test_probing_needs_the_judge_and_its_reference(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="--quality-judge"):
        ServerConfig(quality_probe_seconds=5, quality_judge=tmp_path / "none.onnx")
    ServerConfig(quality_judge=tmp_path / "none.onnx")  # off: not needed
    shutil.copy(JUDGE, tmp_path / "judge.onnx")  # without judge.reference.npz
    with pytest.raises(ServerConfigError, match=r"reference\.npz is missing"):
        ServerConfig(quality_probe_seconds=5, quality_judge=tmp_path / "judge.onnx")
