"""Scoring a pool: every item's stored (or predicted) prediction scored per region, in batches.

Called by the ``selection.score_pool`` Celery task; plain code with a progress callback so it runs
and is tested without Celery. Each batch is scored with one ``score_predictions`` call (items of equal
shape stacked), then stored item by item. Idempotent: an item whose scores come from the same prediction
(same digest) is skipped unless ``force``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from services.common.image_files import load_image
from services.common.masks import encode_rle
from services.selection.candidates import Candidates
from services.selection.pool import PoolStore
from services.selection.predictions import digest
from services.selection.predictor import ClassMapped, Predictor
from services.selection.propagation import colour_histogram
from services.selection.region_demand import RegionDemand
from services.selection.score_store import ScoreStore
from services.selection.scoring import (
    RegionSpec,
    make_grid,
    present_classes,
    score_predictions,
)


def score_pool(pools: PoolStore, scores: ScoreStore, project_id: str, pool_id: str, specs: list[RegionSpec],
               force: bool = False, predictor: Predictor | None = None, batch_size: int = 32,
               progress: Callable[[int, int, str], None] = lambda done, total, message: None,
               repredict: bool = False) -> dict:
    """``repredict`` (with a ``predictor``: a new model): every unlabelled item is predicted again, the stored
    predictions of an older model replaced; labelled items are left out (nothing to select there)."""
    start = time.perf_counter()
    pools.get_pool(project_id, pool_id)  # NOT_FOUND early
    items = pools.items(project_id, pool_id)
    predicted = set(pools.predicted_item_ids(project_id, pool_id))
    if predictor is None:
        items = [i for i in items if i.item_id in predicted]
    elif repredict:
        items = [i for i in items if not i.labelled]
        predicted = set()
    done_digests = {spec.key: scores.scored_digests(project_id, pool_id, spec.key) for spec in specs}
    scored_items = regions = skipped = 0
    for begin in range(0, len(items), batch_size):
        todo_items = []  # (item, prediction, digest, specs to score, image size, image)
        for item in items[begin: begin + batch_size]:
            image = load_image(item.uri)
            stored = pools.prediction(project_id, pool_id, item.item_id) if item.item_id in predicted else None
            if stored is None:
                if image is None:
                    skipped += 1  # nothing to predict from
                    continue
                prediction = predictor.predict(image)
                blob = prediction.to_bytes()
                pools.put_predictions(project_id, pool_id, [(item.item_id, prediction)])
                stored = (prediction, digest(blob))
            prediction, prediction_digest = stored
            todo = [s for s in specs if force or done_digests[s.key].get(item.item_id) != prediction_digest]
            if not todo:
                continue
            size = (item.height, item.width) if item.height and item.width else None
            if image is not None:
                size = image.shape[:2]
                if (item.height, item.width) != size:
                    pools.set_image_size(project_id, pool_id, item.item_id, *size)
            todo_items.append((item, prediction, prediction_digest, todo, size, image))
        # One batched scoring call per set of specs to redo (usually one: all of them).
        by_specs: dict[tuple, list[int]] = {}
        for n, entry in enumerate(todo_items):
            by_specs.setdefault(tuple(entry[3]), []).append(n)
        results: list = [None] * len(todo_items)
        for todo, members in by_specs.items():
            scored = score_predictions([todo_items[n][1] for n in members], list(todo),
                                       [todo_items[n][4] for n in members], [todo_items[n][5] for n in members])
            for n, result in zip(members, scored):
                results[n] = result
        for (item, prediction, prediction_digest, _, _, image), result in zip(todo_items, results):
            regions += scores.store_item_scores(
                project_id, pool_id, item.item_id, result, prediction_digest, prediction.model_version,
                present_classes(prediction), None if image is None else colour_histogram(image), prediction.embedding)
            scored_items += 1
        done = min(begin + batch_size, len(items))
        progress(done, len(items), f"scored {done} / {len(items)} items ({regions} regions)")
    scores.mark_scored(project_id, pool_id)
    return {"pool_id": pool_id, "items_scored": scored_items, "regions_scored": regions,
            "items_skipped": skipped, "seconds": round(time.perf_counter() - start, 3)}


def superpixel_masks(pools: PoolStore, project_id: str, pool_id: str, spec: RegionSpec, candidates: Candidates,
                     rows: Iterable[int]) -> dict[int, tuple[list[int], str]]:
    """COCO RLE ``(size, counts)`` of each superpixel row of ``candidates``, from the same SLIC the scoring
    ran (the item's image when readable, else its stored probability map). Rows of items without a stored
    prediction are left out."""
    masks: dict[int, tuple[list[int], str]] = {}
    by_item: dict[int, list[int]] = {}
    for row in rows:
        by_item.setdefault(int(candidates.item_index[row]), []).append(int(row))
    for index, item_rows in by_item.items():
        item_id = candidates.item_ids[index]
        item = pools.items(project_id, pool_id, [item_id])[0]
        stored = pools.prediction(project_id, pool_id, item_id)
        if stored is None:
            continue
        image = load_image(item.uri)
        size = (item.height, item.width) if item.height else None
        grid = make_grid(spec, stored[0], size or stored[0].probabilities.shape[1:], image)
        for row in item_rows:
            masks[row] = encode_rle(grid.full_labels == candidates.segment[row])
    return masks


def rescore_project(pools: PoolStore, scores: ScoreStore, demand: RegionDemand, project_id: str,
                    predictor: Predictor, model_classes: list[str],
                    progress: Callable[[int, int, str], None] = lambda done, total, message: None) -> dict:
    """After a new task model (``predictor``, over ``model_classes``): every pool of the project that shares a
    label with it is predicted again (the model's classes laid out on the pool's by name) and re-scored for the
    image, every region spec it had scores for and every region spec it was asked for (``demand``). A pool
    without a label in common is left as it is, named under ``skipped``."""
    out: dict = {"pools": {}, "skipped": {}}
    for pool_id in pools.pool_ids(project_id):
        pool = pools.get_pool(project_id, pool_id)
        if not (set(pool.class_names) & set(model_classes)) - {"background"}:
            out["skipped"][pool_id] = f"no label of {pool.class_names} is one of the model's {model_classes}"
            continue
        specs = {RegionSpec("image")} | {RegionSpec(key.split(":")[0], int(key.split(":")[1]))
                                         for key in scores.region_keys(project_id, pool_id) if ":" in key}
        specs |= set(demand.wanted(project_id, pool_id))
        out["pools"][pool_id] = score_pool(
            pools, scores, project_id, pool_id, sorted(specs, key=lambda spec: spec.key), force=True,
            predictor=ClassMapped(predictor, model_classes, list(pool.class_names)), repredict=True,
            progress=progress)
    return out
