"""Does active learning help? A simulation on real data, strategies side by side in one run.

COCO-MVal (``../shared/data/train/coco_mval``, 800 object masks) split into a pool (600) and a test set
(200; pairs sharing a source image stay on one side). Each sample is a square crop around its object,
resized to a small size (binary object segmentation). Every round a small segmentation network is trained
from scratch on what is labelled so far, evaluated (mIoU over background and object on the test set), and
the strategy picks the next batch from the pool through the service's own domain code (predictor,
heuristics, region scoring, strategies). Budgets: whole images (frame granularity), or annotated pixels
(patch / superpixel granularity, same pixel cost per round as the image runs). Reported: mIoU-vs-budget
curves, their normalised area (trapezoid area / (100 (n - 1)), as Belharbi et al. WACV 2021), and the
labels each strategy needs to reach the final mIoU of random (its whole budget), all as ratios to random.

Second part, scale: score and select b = 1000 from synthetic pools of 10k, 100k and 1M regions; time and
peak memory (tracemalloc) per size.

    python -m bench.active_learning --out bench/results            # ~10-15 min on 2 cores
    python -m bench.active_learning --out /tmp/al --quick          # smoke run, ~2 min
    python -m bench.active_learning --out /tmp/al --scale-only     # scale part only, before/after side by side
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import typer
from torch.nn import functional as F

from services.common.active_learning import diversity
from services.models.click_dataset import load_folder, split_stems
from services.models.task_net import TinySegNet
from services.selection.batch import select_batch
from services.selection.candidates import Candidates
from services.selection.predictions import Prediction
from services.selection.predictor import TorchPredictor
from services.selection.propagation import colour_histogram, nearest
from services.selection.scoring import RegionSpec, score_prediction, score_predictions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "train" / "coco_mval"
IGNORE = 255
app = typer.Typer(add_completion=False)


@dataclass(frozen=True)
class Config:
    name: str
    strategy: str
    granularity: str = "image"
    scale: int = 0
    propagate: bool = False


CONFIGS = [
    Config("random", "uniform"), Config("entropy", "entropy"), Config("mc_dropout", "js_divergence"),
    Config("self_consistency", "self_consistency"), Config("uncertainty_diversity", "uncertainty_diversity"),
    Config("combined", "combined"), Config("combined+propagation", "combined", propagate=True),
    Config("random/patch8", "uniform", "patch", 8), Config("combined/patch8", "combined", "patch", 8),
    Config("combined/superpixel", "combined", "superpixel", 16),
]
QUICK = ("random", "entropy", "combined", "combined+propagation", "combined/patch8")


def load(size: int) -> tuple[dict, dict]:
    """(pool, test) dicts of images [N, S, S, 3] uint8 and masks [N, S, S] {0, 1}: object-centred crops."""
    train, test = split_stems(DATA, 200, seed=0)

    def prepare(stems):
        images, masks = [], []
        for sample in load_folder(DATA, stems):
            ys, xs = np.nonzero(sample.annotation > 127)
            h, w = sample.annotation.shape
            cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
            side = max(ys.max() - ys.min(), xs.max() - xs.min(), 16) * 1.5
            y0, x0 = int(max(0, cy - side / 2)), int(max(0, cx - side / 2))
            y1, x1 = int(min(h, cy + side / 2)), int(min(w, cx + side / 2))
            images.append(cv2.resize(sample.image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA))
            masks.append(cv2.resize((sample.annotation[y0:y1, x0:x1] > 127).astype(np.uint8), (size, size),
                                    interpolation=cv2.INTER_NEAREST))
        return {"images": np.stack(images), "masks": np.stack(masks)}

    return prepare(train), prepare(test)


def train(images: np.ndarray, targets: np.ndarray, steps: int, seed: int) -> TinySegNet:
    """From scratch; targets hold 0 / 1 / IGNORE (unlabelled pixels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TinySegNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_all = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
    y_all = torch.from_numpy(targets.astype(np.int64))
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 16))
        x, y = x_all[idx], y_all[idx]
        if rng.random() < 0.5:
            x, y = x.flip(3), y.flip(2)
        loss = F.cross_entropy(model(x)[0], y, ignore_index=IGNORE)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def miou(model: TinySegNet, data: dict) -> float:
    with torch.no_grad():
        x = torch.from_numpy(data["images"].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
        pred = model(x)[0].argmax(1).numpy()
    truth = data["masks"]
    ious = [((pred == k) & (truth == k)).sum() / max(((pred == k) | (truth == k)).sum(), 1) for k in (0, 1)]
    return float(np.mean(ious) * 100)


def run_config(config: Config, pool: dict, test: dict, seed: int, rounds: int, per_round: int, steps: int,
               round0: tuple | None, grid_cache: dict) -> tuple[list[float], list[int], tuple]:
    n, size = len(pool["images"]), pool["images"].shape[1]
    rng = np.random.default_rng(seed)
    initial = rng.permutation(n)[:per_round]
    labelled = np.zeros((n, size, size), bool)
    labelled[initial] = True
    pseudo: set[int] = set()
    curve, budgets = [], []
    model = None
    hists = None
    for r in range(rounds + 1):
        budgets.append(int(labelled.sum()))
        if r == 0 and round0 is not None:
            model, score = round0
        else:
            targets = np.where(labelled, pool["masks"], IGNORE)
            use = np.flatnonzero(labelled.any(axis=(1, 2)))
            if pseudo:
                extra = np.array(sorted(pseudo - set(use.tolist())), dtype=np.int64)
                if len(extra):
                    with torch.no_grad():
                        x = torch.from_numpy(pool["images"][extra].astype(np.float32).transpose(0, 3, 1, 2) / 255.0)
                        targets[extra] = model(x)[0].argmax(1).numpy()
                    use = np.concatenate([use, extra])
            model = train(pool["images"][use], targets[use], steps, seed * 1000 + r)
            score = miou(model, test)
        if r == 0:
            round0 = (model, score)
        curve.append(score)
        if r == rounds:
            break
        # Score the pool with the service's domain code and select the next batch.
        open_items = np.flatnonzero(~labelled.all(axis=(1, 2)))
        predictor = TorchPredictor(model, mc_samples=6 if config.strategy == "js_divergence" else 0,
                                   tta=(("hflip", 1.0), ("scale", 0.75)) if config.strategy in (
                                       "self_consistency", "combined") else ())
        x = pool["images"][open_items].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        predictions = [p for begin in range(0, len(x), 128) for p in predictor.predict_batch(x[begin:begin + 128])]
        spec = RegionSpec(config.granularity, config.scale)
        per_item = [score_prediction(p, [spec], image=pool["images"][i],
                                     grids=grid_cache.setdefault(int(i), {}))[0]
                    for i, p in zip(open_items, predictions)]
        done = np.concatenate([_labelled_regions(labelled[i], scores, grid_cache[int(i)].get(spec))
                               for i, scores in zip(open_items, per_item)])
        candidates = Candidates.from_scores([str(i) for i in open_items], per_item, 2, labelled=done,
                                            embeddings=np.stack([p.embedding for p in predictions]))
        unit = "regions" if config.granularity == "image" else "pixels"
        budget = per_round if unit == "regions" else per_round * size * size
        chosen = select_batch(candidates, config.strategy, budget, unit, seed=seed * 100 + r)
        for row in chosen.rows:
            item = int(open_items[candidates.item_index[row]])
            if config.granularity == "superpixel":
                labelled[item] |= grid_cache[item][spec].full_labels == candidates.segment[row]
            else:
                x0, y0, w, h = candidates.boxes[row]
                labelled[item, y0:y0 + h, x0:x0 + w] = True
        if config.propagate:  # Belharbi et al.: k nearest unlabelled of the same class get pseudo-labels
            if hists is None:
                hists = np.stack([colour_histogram(im) for im in pool["images"]])
            emb = {int(i): p.embedding for i, p in zip(open_items, predictions)}
            unl = np.flatnonzero(~labelled.any(axis=(1, 2)))
            for row in chosen.rows:
                item = int(open_items[candidates.item_index[row]])
                found = nearest(hists[item], hists[unl], 1, emb[item], np.stack([emb[int(u)] for u in unl]), 0.05)
                pseudo.update(int(unl[nb.index]) for nb in found)
    return curve, budgets, round0


def _labelled_regions(labelled: np.ndarray, scores, grid) -> np.ndarray:
    """Regions more than half labelled already (they leave the pool)."""
    if grid is None or grid.granularity == "image":
        return np.zeros(len(scores), bool)
    labels = grid.full_labels if grid.full_labels is not None else grid.labels
    frac = np.bincount(labels.ravel(), weights=labelled.ravel(), minlength=grid.count)
    return frac / np.maximum(grid.area_px, 1) > 0.5


def normalised_auc(curve: list[float]) -> float:
    """Trapezoid area of the mIoU (%) curve over equally spaced budgets / (100 (n - 1)), in %."""
    c = np.asarray(curve)
    return float(((c[1:] + c[:-1]) / 2).sum() / (len(c) - 1))


def labels_to_reach(curve: list[float], budgets: list[int], target: float) -> float:
    """Budget at which the curve first reaches ``target`` (linear interpolation); inf if never."""
    for k in range(len(curve)):
        if curve[k] >= target:
            if k == 0:
                return float(budgets[0])
            f = (target - curve[k - 1]) / (curve[k] - curve[k - 1])
            return float(budgets[k - 1] + f * (budgets[k] - budgets[k - 1]))
    return float("inf")


def _scale_pool(n_regions: int, batched: bool, maps: np.ndarray, spec: RegionSpec) -> Candidates:
    """Score a synthetic pool: ``batched`` with ``score_predictions`` (stacked items), else one
    ``score_prediction`` call per item (the per-item path this benchmark measured before batching)."""
    items = -(-n_regions // 256)
    predictions = [Prediction(maps[i % 16, 0], maps[i % 16, 1:5], maps[i % 16, 5:6]) for i in range(items)]
    if batched:
        per_item = [r[0] for r in score_predictions(predictions, [spec], [(256, 256)] * items)]
    else:
        grids: dict = {}
        per_item = [score_prediction(p, [spec], (256, 256), grids=grids)[0] for p in predictions]
    embeddings = np.random.default_rng(items).normal(size=(items, 16)).astype(np.float32)
    return Candidates.from_scores([f"i{i}" for i in range(items)], per_item, 2, embeddings=embeddings)


def scale_bench(sizes: list[int], budget: int = 1000, baseline: bool = True) -> list[dict]:
    """Score synthetic predictions (256 px images, maps at 1/4 resolution, 16 px patches: 256 regions
    an image, 4 MC members and a flip) and select b from the pool; time and peak traced memory.

    With ``baseline``, each size runs twice side by side: "before" = one ``score_prediction`` call per
    item and k-means fitted on the whole uncertain half with default threads (the sampling cap lifted);
    "after" = batched ``score_predictions`` and k-means fitted single-threaded on the bounded subsample
    (``diversity.fit_sample_size``). Both share the heuristics, so "before" already has their per-pixel
    speed-ups (vote entropy's argmax); the pre-batching code itself is slower still."""
    print(f"scale: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 6, 2, 64, 64)).astype(np.float32) * 2
    maps = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    spec = RegionSpec("patch", 16)
    out = []
    variants = ("before", "after") if baseline else ("after",)
    for n_regions in sizes:
        row = {}
        for variant in variants:
            tracemalloc.start()
            start, cpu0 = time.perf_counter(), time.process_time()
            candidates = _scale_pool(n_regions, variant == "after", maps, spec)
            scored, scored_cpu = time.perf_counter() - start, time.process_time() - cpu0
            times, cpu, chosen = {}, {}, {}
            cap = (diversity.FIT_POINTS_PER_CLUSTER, diversity.MAX_FIT_POINTS, diversity.FIT_THREADS)
            if variant == "before":  # fit on every uncertain candidate with default threads, as before
                diversity.FIT_POINTS_PER_CLUSTER = diversity.MAX_FIT_POINTS = 1 << 62
                diversity.FIT_THREADS = None
            try:
                for strategy in ("uniform", "combined", "score_band", "uncertainty_diversity"):
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    chosen[strategy] = select_batch(candidates, strategy, budget, seed=1).rows
                    times[strategy], cpu[strategy] = time.perf_counter() - t0, time.process_time() - cpu0
            finally:
                diversity.FIT_POINTS_PER_CLUSTER, diversity.MAX_FIT_POINTS, diversity.FIT_THREADS = cap
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            row[variant] = {"regions": len(candidates), "score_s": scored, "select_s": times,
                            "score_cpu_s": scored_cpu, "select_cpu_s": cpu,
                            "score_and_select_combined_s": scored + times["combined"],
                            "score_and_select_diversity_s": scored + times["uncertainty_diversity"],
                            "peak_mib": peak / 2**20, "chosen": chosen}
            print(f"scale {len(candidates)} {variant}: score {scored:.2f} s (cpu {scored_cpu:.2f}), select "
                  + ", ".join(f"{k} {v:.2f} s (cpu {cpu[k]:.2f})" for k, v in times.items())
                  + f", peak {peak / 2**20:.0f} MiB; load {os.getloadavg()[0]:.1f}", flush=True)
        after = row["after"]
        result = {k: v for k, v in after.items() if k != "chosen"}
        if baseline:
            before = row["before"]
            result["before"] = {k: v for k, v in before.items() if k != "chosen"}
            totals = lambda v, s: v["score_cpu_s"] + v["select_cpu_s"][s]  # noqa: E731
            result["speedup"] = {
                "score": before["score_s"] / after["score_s"],
                "select_diversity": before["select_s"]["uncertainty_diversity"]
                / after["select_s"]["uncertainty_diversity"],
                "score_and_select_combined": before["score_and_select_combined_s"]
                / after["score_and_select_combined_s"],
                "score_and_select_diversity": before["score_and_select_diversity_s"]
                / after["score_and_select_diversity_s"],
                "cpu_score": before["score_cpu_s"] / after["score_cpu_s"],
                "cpu_select_diversity": before["select_cpu_s"]["uncertainty_diversity"]
                / after["select_cpu_s"]["uncertainty_diversity"],
                "cpu_score_and_select_combined": totals(before, "combined") / totals(after, "combined"),
                "cpu_score_and_select_diversity": totals(before, "uncertainty_diversity")
                / totals(after, "uncertainty_diversity")}
            result["same_selection"] = {k: bool(np.array_equal(before["chosen"][k], after["chosen"][k]))
                                        for k in after["chosen"]}
            print(f"scale {len(candidates)} speed-up (before / after): "
                  + ", ".join(f"{k} {v:.1f}x" for k, v in result["speedup"].items())
                  + f"; same selection: {result['same_selection']}", flush=True)
        out.append(result)
    return out


def scale_report(scale: list[dict]) -> list[str]:
    lines = ["Wall-clock seconds (CPU seconds of the process in brackets: the machine is shared, so wall time "
             "depends on its load).", "",
             "| regions | score (s) | select combined (s) | select diversity (s) | score + select combined (s) | "
             "score + select diversity (s) | peak MiB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    def cpu(v: dict, strategy: str | None = None) -> float:
        if "score_cpu_s" not in v:  # results from before CPU time was recorded
            return float("nan")
        return v["score_cpu_s"] + (v["select_cpu_s"][strategy] if strategy else 0.0)

    for r in scale:
        for name, v in ((("before", r["before"]),) if "before" in r else ()) + (("after" if "before" in r else "", r),):
            lines.append(f"| {r['regions']}{' ' + name if name else ''} | {v['score_s']:.2f} ({cpu(v):.2f}) | "
                         f"{v['select_s']['combined']:.3f} | {v['select_s']['uncertainty_diversity']:.2f} | "
                         f"{v['score_and_select_combined_s']:.2f} ({cpu(v, 'combined'):.2f}) | "
                         f"{v.get('score_and_select_diversity_s', float('nan')):.2f} "
                         f"({cpu(v, 'uncertainty_diversity'):.2f}) | {v['peak_mib']:.0f} |")
        if "speedup" in r:
            sp = r["speedup"]
            lines.append(f"| {r['regions']} before / after | {sp['score']:.1f}x ({sp['cpu_score']:.1f}x) | | "
                         f"{sp['select_diversity']:.1f}x ({sp['cpu_select_diversity']:.1f}x) | "
                         f"{sp['score_and_select_combined']:.1f}x ({sp['cpu_score_and_select_combined']:.1f}x) | "
                         f"{sp['score_and_select_diversity']:.1f}x ({sp['cpu_score_and_select_diversity']:.1f}x) | |")
    if scale and "before" in scale[0]:
        lines += ["", "Before: one `score_prediction` call per item, k-means fitted on the whole uncertain half; "
                  "after: `score_predictions` batched over items, k-means fitted on a bounded subsample "
                  "(20 x b points), every uncertain candidate assigned. Same selections before / after: "
                  + "; ".join(f"{r['regions']}: " + ", ".join(k for k, v in r["same_selection"].items() if v)
                              for r in scale) + "."]
    return lines


def summarise(results: dict) -> tuple[dict, float]:
    """Per strategy: normalised AUC (mean, std over seeds) and its ratio to random; pixels needed by the
    seed-mean curve to reach random's final seed-mean mIoU, and their ratio to random's pixels."""
    base = results["random"]
    target = float(np.mean(base["curves"], axis=0)[-1])
    base_auc = float(np.mean([normalised_auc(c) for c in base["curves"]]))
    base_reach = labels_to_reach(list(np.mean(base["curves"], axis=0)), list(np.mean(base["budgets"], axis=0)), target)
    summary = {}
    for name, r in results.items():
        aucs = [normalised_auc(c) for c in r["curves"]]
        reach = labels_to_reach(list(np.mean(r["curves"], axis=0)), list(np.mean(r["budgets"], axis=0)), target)
        summary[name] = {"normalised_auc": float(np.mean(aucs)), "normalised_auc_std": float(np.std(aucs)),
                         "auc_ratio_vs_random": float(np.mean(aucs)) / base_auc,
                         "final_miou": float(np.mean([c[-1] for c in r["curves"]])),
                         "pixels_to_target": reach, "label_ratio_vs_random": reach / base_reach,
                         "seconds": r["seconds"]}
    return summary, target


def plot(results: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for name, r in results.items():
        mean, std = np.mean(r["curves"], axis=0), np.std(r["curves"], axis=0)
        x = np.mean(r["budgets"], axis=0) / r["pixels_per_image"]
        ax = axes[0] if "/" not in name else axes[1]
        ax.plot(x, mean, marker="o", ms=3, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.12)
    for name in results:
        if name == "random":
            axes[1].plot(np.mean(results[name]["budgets"], axis=0) / results[name]["pixels_per_image"],
                         np.mean(results[name]["curves"], axis=0), "k--", label="random (images)")
    for ax, title in zip(axes, ("image granularity", "patch / superpixel granularity (pixel budget)")):
        ax.set_xlabel("annotated pixels, in whole-image equivalents")
        ax.set_ylabel("test mIoU (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@app.command()
def main(out: Path = typer.Option(Path("bench/results"), help="folder for the JSON, report and plot"),
         quick: bool = typer.Option(False, help="smoke run: 2 seeds, fewer rounds and strategies"),
         seeds: int = typer.Option(3, help="seeds per strategy (>= 3 for the report)"),
         size: int = typer.Option(32, help="side of the square crops in pixels"),
         rounds: int = typer.Option(6, help="selection rounds after the initial random batch"),
         per_round: int = typer.Option(10, help="images (or their pixels) labelled per round"),
         steps: int = typer.Option(150, help="training steps per round (batch 16)"),
         report_only: bool = typer.Option(False, help="re-summarise OUT/active_learning.json without running"),
         scale_only: bool = typer.Option(False, help="only the scale part (writes OUT/scale.json and OUT/scale.md)"),
         scale_sizes: str = typer.Option("10000,100000,1000000", help="pool sizes (regions) of the scale part"),
         scale_baseline: bool = typer.Option(True, help="scale part: also run the per-item / full-fit baseline "
                                             "side by side and report ratios")) -> None:
    sizes = [int(v) for v in scale_sizes.split(",") if v]
    if scale_only:
        torch.set_num_threads(1)
        scale = scale_bench(sizes, baseline=scale_baseline)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.json").write_text(json.dumps(scale, indent=1, default=float))
        text = "\n".join(["# Scale: score and select b = 1000", ""] + scale_report(scale)) + "\n"
        (out / "scale.md").write_text(text)
        print(text)
        return
    if report_only:
        payload = json.loads((out / "active_learning.json").read_text())
        payload["summary"], payload["settings"]["target_miou"] = summarise(payload["results"])
        plot(payload["results"], out / "active_learning.png")
        (out / "active_learning.json").write_text(json.dumps(payload, indent=1, default=float))
        (out / "active_learning.md").write_text(report(payload))
        print(report(payload))
        return
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if quick:
        seeds, rounds, steps = 2, 3, 80
    configs = [c for c in CONFIGS if not quick or c.name in QUICK]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pool, test = load(size)
    print(f"data: pool {len(pool['images'])}, test {len(test['images'])} at {size} px "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    results = {c.name: {"curves": [], "budgets": [], "pixels_per_image": size * size, "seconds": 0.0} for c in configs}
    grid_cache: dict = {}
    for seed in range(seeds):
        round0 = None
        for config in configs:
            t0 = time.perf_counter()
            curve, budgets, round0 = run_config(config, pool, test, seed, rounds, per_round, steps, round0, grid_cache)
            results[config.name]["curves"].append(curve)
            results[config.name]["budgets"].append(budgets)
            results[config.name]["seconds"] += time.perf_counter() - t0
            print(f"seed {seed} {config.name:24s} " + " ".join(f"{v:5.1f}" for v in curve)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary, target = summarise(results)
    scale = scale_bench([s for s in sizes if s <= 100_000] if quick else sizes, baseline=scale_baseline)
    plot(results, out / "active_learning.png")
    payload = {"settings": {"size": size, "seeds": seeds, "rounds": rounds, "per_round": per_round, "steps": steps,
                            "pool": len(pool["images"]), "test": len(test["images"]), "quick": quick,
                            "target_miou": target, "torch_threads": 1},
               "summary": summary, "results": results, "scale": scale,
               "seconds": time.perf_counter() - start}
    (out / "active_learning.json").write_text(json.dumps(payload, indent=1, default=float))
    (out / "active_learning.md").write_text(report(payload))
    print(report(payload))


def report(payload: dict) -> str:
    s = payload["settings"]
    lines = [
        "# Active learning: does it help?", "",
        f"COCO-MVal object crops at {s['size']} px: pool {s['pool']}, test {s['test']}; a ~6k-parameter "
        f"encoder-decoder trained from scratch each round ({s['steps']} steps); {s['per_round']} images (or their "
        f"pixels) per round, {s['rounds']} rounds after a random start; {s['seeds']} seeds; mean over seeds.",
        f"Target for \"labels needed\": random's final mIoU = {s['target_miou']:.1f}. Ratios < 1 for labels "
        "and > 1 for area are better than random.", "",
        "| strategy | normalised AUC (%) | AUC / random | final mIoU | pixels to target / random (mean curve) |",
        "| --- | --- | --- | --- | --- |"]
    for name, r in payload["summary"].items():
        lines.append(f"| {name} | {r['normalised_auc']:.2f} ± {r['normalised_auc_std']:.2f} | "
                     f"{r['auc_ratio_vs_random']:.3f} | {r['final_miou']:.1f} | "
                     + (f"{r['label_ratio_vs_random']:.2f} |" if np.isfinite(r["label_ratio_vs_random"]) else "not reached |"))
    lines += ["", "![learning curves](active_learning.png)", "", "## Scale: score and select b = 1000", ""]
    lines += scale_report(payload["scale"])
    lines += ["", f"Total run: {payload['seconds'] / 60:.1f} min (times hold for this machine only)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app()
