"""gRPC adapter of ``annotation.v1.Selection``: proto messages <-> the selection domain modules.

Run: ``python -m services.selection.server``.
"""

from __future__ import annotations

import uuid

import grpc
import numpy as np
from google.protobuf import timestamp_pb2

from annotation.v1 import common_pb2, selection_pb2, selection_pb2_grpc
from services.common.active_learning.heuristics import HEURISTICS
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Kit, serve
from services.common.operations import status_from_task
from services.common.proto_time import to_timestamp
from services.common.request_context import caller
from services.selection.batch import select_batch, select_unscored
from services.selection.candidates import unscored
from services.selection.labels import LabelRegion, label_key, patch_segment
from services.selection.pool import Item, PoolInfo, PoolStore
from services.selection.pool_scoring import superpixel_masks
from services.selection.predictions import build
from services.selection.propagation import find_candidates
from services.selection.region_demand import Demand, RegionDemand, ask_for_region
from services.selection.score_store import Label, ScoreStore
from services.selection.scoring import RegionSpec
from services.selection.strategies import STRATEGIES, get_strategy, resolve_params

MAX_ITEMS = 10000
DEFAULT_STRATEGY = "combined"  # an empty SelectBatchRequest.strategy; "uniform" while the pool has no scores
UNSCORED_STRATEGIES = ("", "uniform")  # what a pool no task model has scored yet can serve
GRANULARITY = {common_pb2.GRANULARITY_UNSPECIFIED: "image", common_pb2.GRANULARITY_IMAGE: "image",
               common_pb2.GRANULARITY_FRAME: "image", common_pb2.GRANULARITY_PATCH: "patch",
               common_pb2.GRANULARITY_SUPERPIXEL: "superpixel"}
GRANULARITY_ENUMS = {"image": [common_pb2.GRANULARITY_IMAGE, common_pb2.GRANULARITY_FRAME],
                     "patch": [common_pb2.GRANULARITY_PATCH], "superpixel": [common_pb2.GRANULARITY_SUPERPIXEL]}
DTYPE = {selection_pb2.Tensor.FLOAT32: "FLOAT32", selection_pb2.Tensor.FLOAT16: "FLOAT16",
         selection_pb2.Tensor.UINT8_UNIT: "UINT8_UNIT"}
TRANSFORM = {selection_pb2.AugmentedPrediction.HORIZONTAL_FLIP: "hflip",
             selection_pb2.AugmentedPrediction.VERTICAL_FLIP: "vflip", selection_pb2.AugmentedPrediction.SCALE: "scale"}


def _pool(info: PoolInfo) -> selection_pb2.Pool:
    return selection_pb2.Pool(pool_id=info.pool_id, project_id=info.project_id, display_name=info.display_name,
                              class_names=info.class_names, item_count=info.item_count,
                              labelled_count=info.labelled_count, predicted_count=info.predicted_count,
                              create_time=to_timestamp(info.created_at), score_time=to_timestamp(info.score_time))


def _tensor(t: selection_pb2.Tensor) -> tuple:
    return list(t.shape), DTYPE.get(t.dtype, "UNSPECIFIED"), t.data


MAX_REGION_SIZE = 100000  # patch pixels or SLIC segments, as StartScoring bounds them (a wanted spec gets scored)


def _spec(granularity: int, patch: int, superpixels: int, where: str = "") -> RegionSpec:
    kind = GRANULARITY.get(granularity)
    if kind == "patch":
        if patch <= 0:
            raise InvalidArgument(f"{where}patch_size_px", "must be > 0 for PATCH", reason="REQUIRED")
        if patch > MAX_REGION_SIZE:
            raise InvalidArgument(f"{where}patch_size_px", f"must be in [1, {MAX_REGION_SIZE}]", reason="OUT_OF_RANGE")
        return RegionSpec("patch", patch)
    if kind == "superpixel":
        if superpixels <= 0:
            raise InvalidArgument(f"{where}n_superpixels", "must be > 0 for SUPERPIXEL", reason="REQUIRED")
        if superpixels > MAX_REGION_SIZE:
            raise InvalidArgument(f"{where}n_superpixels", f"must be in [1, {MAX_REGION_SIZE}]", reason="OUT_OF_RANGE")
        return RegionSpec("superpixel", superpixels)
    return RegionSpec("image")


def _items(request) -> list[Item]:
    items = []
    for i, item in enumerate(request.items):
        labels = list(item.image_labels)
        if item.kind == selection_pb2.ITEM_KIND_VIDEO:
            if not item.video_id:
                raise InvalidArgument(f"items[{i}].video_id", "must be set for VIDEO", reason="REQUIRED")
            for n, frame in enumerate(item.frames):
                items.append(Item(f"{item.video_id}/{n}", "frame", frame.image_id or f"{item.video_id}/{n}",
                                  frame.uri, frame.width, frame.height, item.video_id, n, labels))
        elif item.kind in (selection_pb2.ITEM_KIND_IMAGE, selection_pb2.ITEM_KIND_FRAME):
            image = item.image
            items.append(Item(item.item_id or image.image_id, "image" if item.kind == selection_pb2.ITEM_KIND_IMAGE
                              else "frame", image.image_id, image.uri, image.width, image.height,
                              image.video_id if image.HasField("video_id") else None,
                              image.frame_index if image.HasField("frame_index") else None, labels))
        else:
            raise InvalidArgument(f"items[{i}].kind", "must be IMAGE, FRAME or VIDEO", reason="REQUIRED")
    if len(items) > MAX_ITEMS:
        raise InvalidArgument("items", f"at most {MAX_ITEMS} items (frames counted) per call")
    return items


def _region(item_id: str, key: str, segment: int, box, image_id: str = "") -> common_pb2.Region:
    region = common_pb2.Region(image_id=image_id or item_id)
    kind, _, scale = key.partition(":")
    if kind == "patch":
        size = int(scale)
        region.patch.CopyFrom(common_pb2.Region.Patch(row=int(box[1]) // size, col=int(box[0]) // size, size_px=size))
    elif kind == "superpixel":
        region.superpixel.CopyFrom(common_pb2.Region.Superpixel(segment_id=segment, n_segments=int(scale)))
    else:
        region.whole_image.SetInParent()
    return region


def _image_ref(item) -> common_pb2.ImageRef:
    ref = common_pb2.ImageRef(image_id=item.image_id or item.item_id, uri=item.uri, width=item.width,
                              height=item.height)
    if item.video_id is not None:
        ref.video_id, ref.frame_index = item.video_id, item.frame_index or 0
    return ref


def _label_region(label) -> LabelRegion:
    kind = label.region.WhichOneof("kind") if label.HasField("region") else None
    patch, superpixel = label.region.patch, label.region.superpixel
    return LabelRegion(kind, patch.row, patch.col, patch.size_px, superpixel.n_segments, superpixel.segment_id)


class SelectionServicer(selection_pb2_grpc.SelectionServicer):
    def __init__(self, kit: Kit) -> None:
        self._kit = kit
        self._pools, self._scores = PoolStore(kit.sessions), ScoreStore(kit.sessions)
        self._demand = RegionDemand(kit.sessions)

    def CreatePool(self, request, context):
        info = self._pools.create_pool(request.project_id, request.pool_id, request.display_name,
                                       list(request.class_names))
        return selection_pb2.CreatePoolResponse(pool=_pool(info))

    def GetPool(self, request, context):
        return selection_pb2.GetPoolResponse(pool=_pool(self._pools.get_pool(request.project_id, request.pool_id)))

    def RegisterItems(self, request, context):
        registered, present = self._pools.register_items(request.project_id, request.pool_id, _items(request))
        return selection_pb2.RegisterItemsResponse(registered=registered, already_present=present)

    def PutPredictions(self, request_iterator, context):
        stored = replaced = index = 0
        first = None
        for message in request_iterator:
            if first is None:
                first = (message.project_id, message.pool_id)
                pool = self._pools.get_pool(*first)
            elif (message.project_id, message.pool_id) != first:
                raise InvalidArgument("pool_id", "must be the same on every message of the stream")
            batch = []
            for offset, p in enumerate(message.predictions):
                prediction = build(
                    f"predictions[{index + offset}]", len(pool.class_names), _tensor(p.probabilities),
                    [_tensor(m) for m in p.ensemble_members],
                    [(TRANSFORM.get(a.transform, "UNSPECIFIED"), a.scale, _tensor(a.probabilities), a.inverse_applied)
                     for a in p.augmented], list(p.embedding), p.model_version, pool.embedding_dim)
                batch.append((p.item_id, prediction))
            s, r = self._pools.put_predictions(first[0], first[1], batch, first_index=index)
            stored, replaced, index = stored + s, replaced + r, index + len(batch)
            pool = self._pools.get_pool(*first)  # embedding_dim may have been fixed by this message
        return selection_pb2.PutPredictionsResponse(stored=stored, replaced=replaced)

    def ListStrategies(self, request, context):
        return selection_pb2.ListStrategiesResponse(strategies=[selection_pb2.Strategy(
            name=s.name, description=s.description, required_inputs=list(s.required_inputs),
            granularities=[g for kind in s.granularities for g in GRANULARITY_ENUMS[kind]],
            parameters=[selection_pb2.StrategyParameter(name=p.name, description=p.description, default_value=p.default,
                                                        min_value=p.low, max_value=p.high) for p in s.parameters])
            for s in STRATEGIES.values()])

    def StartScoring(self, request, context):
        self._pools.get_pool(request.project_id, request.pool_id)
        specs = []
        for i, granularity in enumerate(request.granularities or [common_pb2.GRANULARITY_IMAGE]):
            kind = GRANULARITY.get(granularity)
            if kind is None:
                raise InvalidArgument(f"granularities[{i}]", "unknown granularity")
            sizes = {"image": [0], "patch": request.patch_sizes_px, "superpixel": request.superpixel_counts}[kind]
            if not sizes:
                field = "patch_sizes_px" if kind == "patch" else "superpixel_counts"
                raise InvalidArgument(field, f"needs at least one value for {kind} granularity", reason="REQUIRED")
            for n, size in enumerate(sizes):
                if kind != "image" and not 0 < size <= MAX_REGION_SIZE:
                    field = "patch_sizes_px" if kind == "patch" else "superpixel_counts"
                    raise InvalidArgument(f"{field}[{n}]", f"must be in [1, {MAX_REGION_SIZE}]", reason="OUT_OF_RANGE")
                specs.append([kind, int(size)])
        op_id = uuid.uuid4().hex
        record = self._enqueue_scoring(op_id, request.project_id, request.pool_id, specs, request.force,
                                       request.triton_model)
        create = timestamp_pb2.Timestamp()
        create.FromNanoseconds(int(record.create_time * 1e9))
        return selection_pb2.StartScoringResponse(operation=common_pb2.Operation(
            id=op_id, kind=record.kind, project_id=request.project_id, state=common_pb2.Operation.PENDING,
            message="enqueued", create_time=create, update_time=create))

    def _enqueue_scoring(self, op_id: str, project_id: str, pool_id: str, specs: list[list], force: bool = False,
                         triton_model: str = ""):
        record = self._kit.operations.create(op_id, "selection.score_pool", project_id)
        self._kit.celery.send_task("selection.score_pool", task_id=op_id, queue="selection",
                                   args=[project_id, pool_id, specs, force, triton_model])
        return record

    def _operation_running(self, op_id: str, project_id: str) -> bool:
        try:
            self._kit.operations.get(op_id, project_id)
        except NotFound:
            return False  # expired, or never sent (Celery reports an unknown id as PENDING)
        task = self._kit.celery.AsyncResult(op_id)
        return status_from_task(task.state, task.info).state in ("PENDING", "RUNNING")

    def _ask_for_region(self, project_id: str, pool_id: str, spec: RegionSpec) -> Demand:
        """No scores for a region spec: wanted from now on, scored from stored predictions (no Triton model)."""
        return ask_for_region(
            self._demand, self._pools, project_id, pool_id, spec, lambda: uuid.uuid4().hex,
            lambda op_id: self._operation_running(op_id, project_id),
            lambda op_id, wanted: self._enqueue_scoring(op_id, project_id, pool_id,
                                                        [[wanted.granularity, wanted.scale]]))

    def SelectBatch(self, request, context):
        pool = self._pools.get_pool(request.project_id, request.pool_id)
        strategy = get_strategy(request.strategy or DEFAULT_STRATEGY)
        spec = _spec(request.granularity, request.patch_size_px, request.n_superpixels)
        if spec.granularity not in strategy.granularities:
            raise InvalidArgument("granularity", f"strategy {strategy.name!r} does not support {spec.granularity}")
        candidates = self._scores.candidates(request.project_id, request.pool_id, spec.key, len(pool.class_names))
        fresh = len(candidates) == 0 and spec.granularity == "image" and request.strategy in UNSCORED_STRATEGIES
        if fresh:  # no task model has scored the pool yet: a normal state of a new project, not an error
            strategy = get_strategy("uniform")
            items = self._pools.items(request.project_id, request.pool_id)
            candidates = unscored([i.item_id for i in items], [(i.height, i.width) for i in items],
                                  [i.labelled for i in items])
        elif len(candidates) == 0 and spec.granularity != "image":
            demand = self._ask_for_region(request.project_id, request.pool_id, spec)
            raise FailedPrecondition(demand.explain(request.pool_id), field="granularity")
        elif len(candidates) == 0:
            raise FailedPrecondition(f"pool {request.pool_id!r} has no scores for {spec.key}; run StartScoring "
                                     "(only uniform selects among unscored images)", field="granularity")
        item_filter = None
        if request.item_ids:
            wanted = set(request.item_ids)
            unknown = wanted - set(candidates.item_ids)
            if unknown:
                raise InvalidArgument("item_ids", f"not scored items of the pool: {sorted(unknown)[:5]}")
            item_filter = np.array([i in wanted for i in candidates.item_ids])
        band = (request.score_band.low, request.score_band.high) if request.HasField("score_band") else None
        unit = "pixels" if request.budget_unit == selection_pb2.BUDGET_UNIT_PIXELS else "regions"
        if fresh:
            if band is not None:
                raise FailedPrecondition(f"pool {request.pool_id!r} has no scores yet for a score band to filter on",
                                         field="score_band")
            if request.params:
                resolve_params(strategy, dict(request.params))  # unknown names are still refused
            chosen = select_unscored(candidates, int(request.budget), unit, item_filter, request.seed or None,
                                     request.up_to_budget)
        else:
            chosen = select_batch(candidates, strategy.name, int(request.budget), unit, dict(request.params),
                                  request.class_balanced, band, item_filter, request.seed or None,
                                  request.up_to_budget)
        masks = {}
        if spec.granularity == "superpixel":
            masks = {row: common_pb2.Mask(size=size, counts=counts) for row, (size, counts) in superpixel_masks(
                self._pools, request.project_id, request.pool_id, spec, candidates, chosen.rows).items()}
        items = {i.item_id: i for i in self._pools.items(request.project_id, request.pool_id,
                                                         [candidates.item_ids[k] for k in candidates.item_index[chosen.rows]])}
        # provenance: which model's predictions each picked score came from (none when drawn unscored)
        versions = {} if fresh else self._scores.model_versions(request.project_id, request.pool_id, spec.key,
                                                                list(items))
        regions = []
        for rank, (row, score, reason, cls) in enumerate(zip(chosen.rows, chosen.scores, chosen.reasons,
                                                             chosen.class_index), start=1):
            item_id = candidates.item_ids[candidates.item_index[row]]
            box = candidates.boxes[row]
            regions.append(selection_pb2.SelectedRegion(
                rank=rank, item_id=item_id, score=float(score), reason=reason, breakdown=candidates.breakdown(row),
                region=_region(item_id, spec.key, int(candidates.segment[row]), box, items[item_id].image_id),
                area_px=int(candidates.area_px[row]), class_index=int(cls), mask=masks.get(int(row)),
                box=common_pb2.Box(x=float(box[0]), y=float(box[1]), width=float(box[2]), height=float(box[3])),
                image=_image_ref(items[item_id]), model_version=versions.get(item_id, "")))
        selection_id = self._scores.record_batch(
            request.project_id, request.pool_id, strategy.name,
            {"granularity": spec.key, "budget": int(request.budget), "unit": unit, "params": dict(request.params),
             "class_balanced": request.class_balanced, "seed": int(request.seed), "asked": request.strategy,
             "unscored": fresh, "up_to_budget": request.up_to_budget},
            [{"item_id": r.item_id, "segment": int(candidates.segment[row]), "score": r.score}
             for r, row in zip(regions, chosen.rows)])
        return selection_pb2.SelectBatchResponse(selection_id=selection_id, regions=regions,
                                                 budget_used=chosen.budget_used,
                                                 candidates_considered=chosen.considered)

    def ReportLabels(self, request, context):
        pool = self._pools.get_pool(request.project_id, request.pool_id)
        if len(request.labels) > MAX_ITEMS:
            raise InvalidArgument("labels", f"at most {MAX_ITEMS} labels per call")
        items = {i.item_id: i for i in self._pools.items(request.project_id, request.pool_id,
                                                         [label.item_id for label in request.labels])}
        labels = []
        for i, label in enumerate(request.labels):
            key, segment, region = label_key(_label_region(label), items.get(label.item_id), f"labels[{i}]")
            labels.append(Label(label.item_id, key, segment, region, list(label.class_labels),
                                {"size": list(label.mask.size), "counts": label.mask.counts} if label.HasField("mask") else None,
                                caller().acting_as(label.annotator_id), label.label_time.ToDatetime() if label.HasField("label_time") else None))
        recorded, completed = self._scores.report_labels(request.project_id, request.pool_id, labels,
                                                         len(pool.class_names))
        return selection_pb2.ReportLabelsResponse(recorded=recorded, items_completed=completed)

    def FindPropagationCandidates(self, request, context):
        pool = self._pools.get_pool(request.project_id, request.pool_id)
        if request.class_index >= len(pool.class_names):
            raise InvalidArgument("class_index", f"must be in [0, {len(pool.class_names)})")
        k = request.k or 5
        if not 1 <= k <= 100:
            raise InvalidArgument("k", "must be in [1, 100]", reason="OUT_OF_RANGE")
        if request.feature_weight < 0 or request.max_distance < 0:
            raise InvalidArgument("feature_weight" if request.feature_weight < 0 else "max_distance", "must be >= 0")
        found = find_candidates(self._scores.item_features(request.project_id, request.pool_id), request.item_id,
                                request.class_index, k, request.feature_weight, request.max_distance,
                                pool_id=request.pool_id)
        return selection_pb2.FindPropagationCandidatesResponse(candidates=[selection_pb2.PropagationCandidate(
            item_id=row.item_id, histogram_js_divergence=n.histogram_js, feature_distance=n.feature_distance,
            distance=n.distance, image=common_pb2.ImageRef(image_id=row.image_id, uri=row.uri, width=row.width,
                                                           height=row.height))
            for row, n in found])

    def _heuristic(self, name: str) -> str:
        if name in HEURISTICS:
            return name
        return get_strategy(name).heuristic

    def _score_protos(self, rows, only: str | None) -> list[selection_pb2.RegionScore]:
        out = []
        for row in rows:
            breakdown = {h: getattr(row, h) for h in HEURISTICS if getattr(row, h) is not None}
            for name in ([only] if only else list(breakdown)):
                heuristic = self._heuristic(name)
                if heuristic not in breakdown:
                    continue
                out.append(selection_pb2.RegionScore(
                    item_id=row.item_id, region=_region(row.item_id, row.region_key, row.segment,
                                                        (row.x, row.y, row.width, row.height)),
                    strategy=name, score=breakdown[heuristic], breakdown=breakdown, model_version=row.model_version,
                    score_time=to_timestamp(row.scored_at)))
        return out

    def GetScore(self, request, context):
        self._pools.get_pool(request.project_id, request.pool_id)
        key, segment = "image", 0
        kind = request.region.WhichOneof("kind") if request.HasField("region") else None
        if kind == "patch":
            item = self._pools.items(request.project_id, request.pool_id, [request.item_id])
            if not item:
                raise NotFound(f"no item {request.item_id!r}", field="item_id")
            size = request.region.patch.size_px
            if size <= 0:
                raise InvalidArgument("region.patch.size_px", "must be > 0")
            key = f"patch:{size}"
            segment = patch_segment(request.region.patch.row, request.region.patch.col, size, item[0].width)
        elif kind == "superpixel":
            key, segment = f"superpixel:{request.region.superpixel.n_segments}", request.region.superpixel.segment_id
        elif kind == "box":
            raise InvalidArgument("region", "scores are stored per whole image, patch or superpixel, not per box")
        if request.strategy:
            self._heuristic(request.strategy)
        rows, _ = self._scores.region_scores(request.project_id, request.pool_id, request.item_id, key, segment)
        if not rows:
            raise NotFound(f"no stored score for item {request.item_id!r} region {key}#{segment}", field="item_id")
        return selection_pb2.GetScoreResponse(scores=self._score_protos(rows, request.strategy or None))

    def ListScores(self, request, context):
        self._pools.get_pool(request.project_id, request.pool_id)
        if not request.strategy:
            raise InvalidArgument("strategy", "required: a heuristic or strategy name", reason="REQUIRED")
        heuristic = self._heuristic(request.strategy)
        spec = _spec(request.granularity, request.patch_size_px, request.n_superpixels)
        size = min(request.page.page_size or 50, 1000)
        try:
            offset = int(request.page.page_token or 0)
        except ValueError:
            raise InvalidArgument("page.page_token", "not a token returned by this server")
        rows, total = self._scores.region_scores(request.project_id, request.pool_id, None, spec.key, None, heuristic,
                                                 request.include_labelled, offset, size)
        next_token = str(offset + size) if offset + size < total else ""
        return selection_pb2.ListScoresResponse(scores=self._score_protos(rows, request.strategy),
                                                page=common_pb2.PageInfo(next_page_token=next_token, total_size=total))


def register(server: grpc.Server, kit: Kit) -> None:
    selection_pb2_grpc.add_SelectionServicer_to_server(SelectionServicer(kit), server)


if __name__ == "__main__":
    serve("selection", register)
