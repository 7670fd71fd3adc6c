"""Dialog simulation: every policy answers the same questions on a data set with ground truth, timed
by the simulated annotator; total human seconds to get every object to the IoU target, in one run.

    python -m services.dialog.simulate --data ../shared/data/grabcut --out var/dialog/grabcut.json

Outcomes (proposals from the real segmentation service, the standard clicker's runs from scratch and
from each proposal) are measured once through a private stack (Redis, tritonserver, the segmentation
server and one without refinement for the network's own confidence) and cached under
``var/dialog/cache/``; the policies are then replayed on them (``replay.py``), beside two yardsticks no
policy can reach (``replay.bounds``: acceptance known in advance; hindsight). Writes FILE.json and
FILE.png (total seconds per policy, and cumulative seconds over the objects).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from tqdm import tqdm

from services.dialog.outcomes import augment, load_cached, measure, save
from services.dialog.policy import registry
from services.dialog.replay import bounds, replay
from services.models.click_dataset import load_folder
from services.simulation.stack import segmentation_fingerprint

app = typer.Typer(add_completion=False)


def collect(data: Path, cache: Path, limit: int, iou_target: float, max_clicks: int) -> list:
    samples = load_folder(data)[: limit or None]
    if not samples:
        raise typer.BadParameter(f"no image/mask pairs under {data}", param_hint="--data")
    outcomes = {s.stem: load_cached(cache / f"{s.stem}.json") for s in samples}
    stale = [s for s in samples if outcomes[s.stem] is None
             or any("proposal_agreement" not in p.features for p in outcomes[s.stem].proposals)]
    if stale:
        from annotation.v1 import segmentation_pb2_grpc
        from services.simulation.stack import LocalStack

        with LocalStack(["segmentation"], overrides={"segmentation-raw": {"segmentation_refine": False}}) as stack:
            stub = segmentation_pb2_grpc.SegmentationStub(stack.channel("segmentation"))
            raw = segmentation_pb2_grpc.SegmentationStub(stack.channel("segmentation-raw"))
            for sample in tqdm(stale, desc="measuring", unit="img"):
                outcome = outcomes[sample.stem]
                if outcome is None:
                    outcome = measure(stub, raw, stack.auth, sample, iou_target, max_clicks)
                else:
                    augment(outcome, stub, raw, stack.auth, sample)
                save(outcome, cache / f"{sample.stem}.json")
                outcomes[sample.stem] = outcome
    return [outcomes[s.stem] for s in samples]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = report["policies"]
    names = sorted(policies, key=lambda n: policies[n]["total_seconds"])
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    best_fixed = report["best_fixed"]
    colours = ["tab:green" if n == "greedy" else "tab:orange" if n == best_fixed else "tab:grey" for n in names]
    bars.barh(names, [policies[n]["total_seconds"] / 60 for n in names], color=colours)
    for i, n in enumerate(names):
        bars.text(policies[n]["total_seconds"] / 60, i, f" {policies[n]['total_seconds'] / 60:.1f}", va="center",
                  fontsize=8)
    for (name, value), style in zip(report.get("bounds", {}).items(), (":", "--")):
        bars.axvline(value["total_seconds"] / 60, color="black", ls=style, lw=1,
                     label=f"{name.replace('_', ' ')} (not reachable)")
    if report.get("bounds"):
        bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    bars.set(xlabel="simulated human minutes (all objects to IoU target)", title="total per policy")
    bars.invert_yaxis()
    for n in names:
        seconds = [row[1] for row in policies[n]["per_object"]]
        cumulative = [sum(seconds[: i + 1]) / 60 for i in range(len(seconds))]
        curves.plot(range(1, len(seconds) + 1), cumulative, label=n, lw=2 if n == "greedy" else 1)
    curves.set(xlabel="objects done", ylabel="cumulative minutes", title="cumulative time")
    curves.legend(fontsize=7)
    curves.grid(alpha=0.3)
    fig.suptitle(f"{report['data']}: {report['objects']} objects, IoU >= {report['iou_target']}; greedy "
                 f"{report['greedy_vs_best_fixed']:.3f}x of best fixed ({best_fixed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def default_cache(data: Path, iou_target: float, max_clicks: int) -> Path:
    return Path("var/dialog/cache") / segmentation_fingerprint() / f"{data.name}-{iou_target}-{max_clicks}"


def simulate(data: Path, out: Path, cache: Path | None = None, limit: int = 0, iou_target: float = 0.85,
             max_clicks: int = 20, seed: int = 0, policies: list[str] | None = None) -> dict:
    cache = cache or default_cache(data, iou_target, max_clicks)
    started = time.perf_counter()
    outcomes = collect(data, cache, limit, iou_target, max_clicks)
    measured_s = time.perf_counter() - started
    chosen = registry()
    unknown = set(policies or []) - set(chosen)
    if unknown:
        raise typer.BadParameter(f"unknown policies {sorted(unknown)}; choose from {sorted(chosen)}",
                                 param_hint="--policy")
    results = {name: replay(outcomes, policy, iou_target, max_clicks, seed).to_dict()
               for name, policy in chosen.items() if not policies or name in policies}
    fixed = {n: r for n, r in results.items() if registry()[n].kind == "fixed"}
    best_fixed = min(fixed, key=lambda n: fixed[n]["total_seconds"]) if fixed else ""
    report = {"data": str(data), "objects": len(outcomes), "iou_target": iou_target, "max_clicks": max_clicks,
              "seed": seed, "best_fixed": best_fixed, "measure_seconds": round(measured_s, 1),
              "policies": results}
    if best_fixed:
        report["bounds"] = {name: {"total_seconds": value,
                                   "vs_best_fixed": round(value / fixed[best_fixed]["total_seconds"], 4)}
                            for name, value in bounds(outcomes, iou_target, max_clicks, seed).items()}
    if "greedy" in results and best_fixed:
        report["greedy_vs_best_fixed"] = round(results["greedy"]["total_seconds"]
                                               / fixed[best_fixed]["total_seconds"], 4)
        report["ratios_to_greedy"] = {n: round(r["total_seconds"] / results["greedy"]["total_seconds"], 3)
                                      for n, r in results.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if "greedy_vs_best_fixed" in report:
        plot(report, out.with_suffix(".png"))
    return report


@app.command()
def main(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="folder with images/ and masks/"),
    out: Path = typer.Option(..., help="results JSON; the plot goes beside it as .png"),
    limit: int = typer.Option(0, min=0, help="only the first N images (0: all)"),
    iou_target: float = typer.Option(0.85, min=0.05, max=1.0),
    max_clicks: int = typer.Option(20, min=1, max=100),
    seed: int = typer.Option(0, help="seed of the simulated annotator's timing"),
    cache: Path = typer.Option(None, help="outcome cache (default var/dialog/cache/<model fingerprint>/<data>-<target>-<clicks>)"),
    policy: list[str] = typer.Option([], help="policies to compare (repeatable); default all"),
) -> None:
    report = simulate(data, out, cache, limit, iou_target, max_clicks, seed, policy)
    for name, r in sorted(report["policies"].items(), key=lambda kv: kv[1]["total_seconds"]):
        typer.echo(f"{name:24s} {r['total_seconds']:8.1f} s  questions {r['questions']:4d}  "
                   f"reached {r['objects_reached']}/{r['objects']}  "
                   f"x{report.get('ratios_to_greedy', {}).get(name, float('nan')):.3f} of greedy")
    for name, value in report.get("bounds", {}).items():
        typer.echo(f"bound: {name:17s} {value['total_seconds']:8.1f} s  {value['vs_best_fixed']:.3f}x of best fixed "
                   "(knows outcomes no policy knows)")
    if "greedy_vs_best_fixed" in report:
        typer.echo(f"greedy / best fixed ({report['best_fixed']}) = {report['greedy_vs_best_fixed']:.3f}")
    typer.echo(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    app()
