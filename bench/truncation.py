"""What the truncation threshold does to the shipped generators' digits, as a table.

    python -m bench.truncation [--thresholds 0,2,1.5,1,0.7,0.5] [--cas-seeds 1] [--no-cas]

For `mnist-dcgan` and `mnist-cgan` (their ONNX files, through ONNX Runtime) and each threshold
t (0: none, what is shipped), draws 1,000 images with the latent contract's truncated latents
at seed 1 (what a call or a bulk job with `truncation=t` gets; cgan: balanced labels), and
reports both judges' class shares (cgan: class accuracy) and Frechet ratio; for cgan also the
Classification Accuracy Score of 10,000 images at t and 10 real digits per class plus them
(`ganserve.training.cas`, the recipe of the shipped figures but `--cas-seeds` seeds, 0 first:
about 170 s a seed and threshold on one thread of the 2-core VM). `--json FILE` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.augment import machine
from ganserve.contract import balanced_labels
from ganserve.export.evaluate import OnnxGenerator
from ganserve.latent import latents
from ganserve.training import data
from ganserve.training.cas import ValueRecipe, measure_value
from ganserve.training.config import TrainConfig
from ganserve.training.evaluate import judge_digits
from ganserve.training.judge import judges_for
from ganserve.training.trainer import DEFAULT_CLASSIFIER

MODELS = {"mnist-dcgan": Path("models/mnist-dcgan/1/model.onnx"),
          "mnist-cgan": Path("models/mnist-cgan/1/model.onnx")}  # fmt: skip
SAMPLES, SEED = 1000, 1


def images_at(netG: OnnxGenerator, config: TrainConfig, t: float) -> tuple[torch.Tensor, Any]:
    """SAMPLES images [-1, 1] at seed SEED and threshold t, and their labels (cgan) or None."""
    z = torch.from_numpy(latents(SEED, 0, SAMPLES, config.nz, truncation=t))
    if config.family != "cgan":
        return netG(z), None
    labels = torch.from_numpy(balanced_labels(0, SAMPLES, config.num_classes))
    return netG(z, labels), labels


def row(name: str, t: float, cas_seeds: int) -> dict[str, Any]:
    netG = OnnxGenerator(MODELS[name], threads=1)
    config = TrainConfig.from_dict(netG.card.provenance["config"])
    train, held = data.load(config)
    classifier, judge = judges_for(config, DEFAULT_CLASSIFIER, progress=False)
    assert classifier is not None and judge is not None
    images, labels = images_at(netG, config, t)
    out: dict[str, Any] = {"model": name, "truncation": t}
    for who, net in (("independent", judge), ("project", classifier)):
        report = judge_digits(net, images, labels, train, held)
        out[who] = {k: report[k] for k in ("frechet_ratio", "min_class_share", "max_class_share")}
        if labels is not None:
            out[who]["class_accuracy"] = report["class_accuracy"]
    if config.family == "cgan" and cas_seeds:
        recipe = ValueRecipe(seeds=tuple(range(cas_seeds)), shots=(10,))
        value = measure_value(netG, config, train, held, recipe, truncation=t)
        acc = value["accuracy"]
        out["cas"] = {
            "generated": acc["generated"]["mean"],
            "real": acc["real"]["mean"],
            "ratio": value["cas_ratio"],
            "real_10": acc["real_10"]["mean"],
            "real_10_plus_generated": acc["real_10_plus_generated"]["mean"],
            "seeds": cas_seeds,
        }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | truncation | independent: classes (accuracy) / Frechet ratio "
        "| project: classes (accuracy) / ratio | CAS (of real) | 10 per class + generated |",
        "|---|---:|---|---|---:|---:|",
    ]
    for r in rows:
        cells = []
        for who in ("independent", "project"):
            j = r[who]
            shares = f"{100 * j['min_class_share']:.1f}-{100 * j['max_class_share']:.1f}%"
            accuracy = f" ({j['class_accuracy']:.3f})" if "class_accuracy" in j else ""
            cells.append(f"{shares}{accuracy} / {j['frechet_ratio']:.2f}")
        cas = r.get("cas")
        value = ["", ""]
        if cas:
            value = [f"{cas['generated']:.4f} ({cas['ratio']:.3f})"]
            value.append(f"{cas['real_10_plus_generated']:.4f}")
        t = f"{r['truncation']:g}" if r["truncation"] else "none"
        lines.append(f"| {r['model']} | {t} | {' | '.join(cells + value)} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--thresholds", default="0,2,1.5,1,0.7,0.5")
    p.add_argument("--cas-seeds", type=int, default=1)
    p.add_argument("--no-cas", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    started = time.perf_counter()
    rows = []
    for name in MODELS:
        for t in thresholds:
            rows.append(row(name, t, 0 if args.no_cas else args.cas_seeds))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\n{machine()}; {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
