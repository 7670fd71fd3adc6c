"""The demo walk: the loop over REST, as a person meets it in the web annotator, with timings: the dialog's
question about what selection chose, the answer, clicks, submit, the review score; then a training round
(more sessions until the training service's snapshot holds a training and a held-out image, a small task-model
job, the promotion gate's verdict) and the next question: after a promotion, one selection picked from the
promoted version's scores (the question names the model version of its scores).

Sample photos ship with scikit-image (``skimage.data``); each has fixed clicks on its main object, and its
mirror, upside-down and rotated (180°) images are three more samples (new pixels, so new images). The training
service splits images by a hash of their random ids, so the walk annotates until the snapshot holds both
splits: 16 images make a walk that never finds both (12 in a row on one side, 1 in 2048) or has none left to
ask about afterwards vanishingly rare.
A step that falls back (no question from the dialog, a training job that fails or never ends) raises
``DemoFailed``: the demo then exits non-zero, saying which step.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from services.gateway.client import GatewayClient, GatewayError

PROJECT = "demo"
# name -> (loader name in skimage.data, label, clicks in image pixels (x, y, positive))
SAMPLES = {
    "coffee.png": ("coffee", "cup", [(300, 180, True), (40, 30, False)]),
    "chelsea.png": ("chelsea", "cat", [(200, 170, True), (20, 20, False)]),
    "astronaut.png": ("astronaut", "person", [(250, 330, True), (480, 40, False)]),
    "rocket.png": ("rocket", "rocket", [(320, 210, True), (30, 30, False)]),
}
# filename prefix of each variant of a sample -> (left-right flip, up-down flip)
VARIANTS = {"": (False, False), "mirrored-": (True, False), "upside-down-": (False, True), "rotated-": (True, True)}
# The training round's job: the task model (selection's), small enough for a couple of CPU cores.
TASK_JOB = {"steps": 120, "image_size": 64, "batch_size": 4}
# annotated images before the first snapshot, at most: a quarter of the images stay for the next question
MIN_SESSIONS, MAX_SESSIONS = 4, 3 * len(SAMPLES)
# After a promotion selection re-scores the pool asynchronously: how long the next question may wait for it.
SCORES_WAIT_S, SCORES_POLL_S = 120.0, 5.0


class DemoFailed(RuntimeError):
    """A step of the walk fell back or failed; the message says which."""


def sample_files() -> list[tuple[str, bytes]]:
    from skimage import data  # heavy import, only for the demo

    files = []
    for prefix, (left_right, up_down) in VARIANTS.items():
        for name, (loader, _label, _clicks) in SAMPLES.items():
            pixels = np.asarray(Image.fromarray(np.asarray(getattr(data, loader)())).convert("RGB"))
            pixels = pixels[::-1 if up_down else 1, ::-1 if left_right else 1]
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
            files.append((prefix + name, buffer.getvalue()))
    return files


def sample_clicks(image: dict) -> tuple[str, list[tuple[float, float, bool]]]:
    """The label and clicks of a sample photo (flipped as its variant is); a centre click otherwise."""
    prefix = next((p for p in VARIANTS if p and image["filename"].startswith(p)), "")
    name = image["filename"].removeprefix(prefix)
    if name not in SAMPLES:
        return "object", [(image["width"] / 2, image["height"] / 2, True)]
    _loader, label, clicks = SAMPLES[name]
    left_right, up_down = VARIANTS[prefix]
    return label, [(image["width"] - 1 - x if left_right else x, image["height"] - 1 - y if up_down else y, positive)
                   for x, y, positive in clicks]


def _timed(action: Callable):
    start = time.perf_counter()
    result = action()
    return result, (time.perf_counter() - start) * 1000


def demo_project(client: GatewayClient) -> str:
    """``demo``, or ``demo-N`` when earlier runs made those: each run starts from unannotated images and a
    project on its base models, so the loop is walked from its start."""
    taken = {p["project_id"] for p in client.request("GET", "/v1/projects")}
    n = 1
    while (PROJECT if n == 1 else f"{PROJECT}-{n}") in taken:
        n += 1
    return PROJECT if n == 1 else f"{PROJECT}-{n}"


def walk(client: GatewayClient, say: Callable[[str], None], quality_wait_s: float = 20.0,
         training_wait_s: float = 600.0) -> dict:
    """Runs the loop once round; returns what happened (for tests and the summary). Raises DemoFailed."""
    project = demo_project(client)
    labels = sorted({label for _loader, label, _c in SAMPLES.values()})
    client.create_project(project, "Demo (scikit-image sample photos)", labels, exist_ok=True)
    images, ms = _timed(lambda: client.upload(project, sample_files()))
    say(f"project {project}: uploaded {len(images)} sample photos from scikit-image (each also mirrored, upside "
        f"down and rotated) in {ms:.0f} ms")
    by_id = {i["image_id"]: i for i in images}

    first = _session(client, project, by_id, say)
    score = _wait_for_score(client, project, first["session_id"], quality_wait_s, say)
    sessions = [first]

    say("-- a training round: the task model (selection's) on the project's accepted annotations")
    snapshot = _snapshot_for_training(client, project, by_id, sessions, say)
    training = _train(client, project, snapshot, training_wait_s, say)

    after = _next_question(client, project, by_id, training, say)
    return {"project": project, "session_id": first["session_id"], "image": first["image"],
            "click_ms": first["click_ms"], "area_px": first["area_px"], "score": score,
            "sessions": len(sessions), "training": training, "next_question": after}


def _fetch(client: GatewayClient, project: str, by_id: dict, skip: bool = False) -> tuple[dict, dict, float]:
    """The dialog's next question (never the fallback's), its image and the milliseconds it took; ``skip``
    skips the question held first."""
    path = f"/v1/projects/{project}/questions/next"
    question, ms = _timed(lambda: client.request("POST", path, json={"skip": True}) if skip
                          else client.next_question(project))
    if question["exhausted"]:
        raise DemoFailed("the dialog has no question left: every sample image is annotated")
    task = question["task"]
    if task["policy"] == "fallback":
        raise DemoFailed(f"the question did not come from the dialog: {task['reason']}")
    return task, by_id.get(task["image_id"], question["image"]), ms


def _say_question(task: dict, image: dict, ms: float, say, heading: str) -> None:
    say(f"{heading} ({ms:.0f} ms): {task['question_type']} about {_region(task)} of {image['filename']} "
        f"[{task['policy']}] {task['reason']}")


def _ask(client: GatewayClient, project: str, by_id: dict, say, heading: str = "question") -> tuple[dict, dict]:
    """The dialog's next question (never the fallback's) and its image."""
    task, image, ms = _fetch(client, project, by_id)
    _say_question(task, image, ms, say, heading)
    return task, image


def _region(task: dict) -> str:
    region = task.get("region") or {"kind": "whole_image"}
    if region["kind"] == "whole_image":
        return "the whole image"
    return f"a {region['kind']} at {[round(v) for v in region.get('box', [])]}"


def _session(client: GatewayClient, project: str, by_id: dict, say) -> dict:
    """One question of the dialog answered as a person would, ending in a submitted mask."""
    task, image = _ask(client, project, by_id, say)
    task = _answer_until_segment(client, project, task, say)
    image = by_id.get(task["image_id"], image)
    session, ms = _timed(lambda: client.start_session(project, task_id=task["task_id"]))
    label, clicks = sample_clicks(image)
    say(f"session {session['session_id']} on {image['filename']} started in {ms:.0f} ms "
        f"({image['width']}x{image['height']})")
    t0 = time.perf_counter()
    click_ms = []
    for x, y, positive in clicks:
        reply, ms = _timed(lambda x=x, y=y, positive=positive: client.click(
            project, session["session_id"], x, y, positive, int((time.perf_counter() - t0) * 1000)))
        click_ms.append(ms)
        say(f"  click {'+' if positive else '-'} ({x:.0f}, {y:.0f}): mask {reply['stats']['area_px']} px, "
            f"round trip {ms:.0f} ms (Triton {reply['model_latency_ms']:.0f} ms, service "
            f"{reply['service_latency_ms']:.0f} ms), IoU with previous {reply['iou_with_previous']:.2f}")
    done, ms = _timed(lambda: client.finish(project, session["session_id"], "submitted", label))
    say(f"submitted as '{label}' in {ms:.0f} ms: mask stored; one AnnotationSubmitted event sent to the "
        f"byproducts (task {done['byproducts_operation_id'][:8]}…), quality (task {done['quality_operation_id'][:8]}…), "
        "selection and training queues, and to the dialog's when it asked the question")
    return {"session_id": session["session_id"], "image": image["filename"], "image_id": image["image_id"],
            "click_ms": click_ms, "area_px": reply["stats"]["area_px"]}


def _answer_until_segment(client: GatewayClient, project: str, task: dict, say: Callable[[str], None]) -> dict:
    """Answers the questions that need no clicks as a person would in the web annotator (a proposal: "no",
    so that the clicks correct it; a region or nothing to do: skipped) until a SEGMENT task is asked."""
    for _ in range(5):
        if task["question_type"] == "SEGMENT":
            return task
        if task["proposal_source"] or task["proposal"]:
            say(f"  proposal shown: {task['proposal_source'] or 'from the question'}; prompt: {task['prompt']}")
        body = {"verify": {"accepted": False}} if task["question_type"] == "VERIFY" else {"skip": {"reason": "demo"}}
        path = f"/v1/projects/{project}/tasks/{task['task_id']}/answer"
        reply, ms = _timed(lambda p=path, b=body: client.request("POST", p, json={**b, "seconds": 2.0}))
        say(f"answer ({ms:.0f} ms): {'no' if 'verify' in body else 'skip'}, {reply['dialog']} by the dialog")
        if reply["follow_up"]:
            task = reply["follow_up"]["task"]
        else:
            nxt = client.next_question(project)
            if nxt["exhausted"]:
                raise DemoFailed("the dialog has no question left to segment")
            task = nxt["task"]
            if task["policy"] == "fallback":
                raise DemoFailed(f"the question did not come from the dialog: {task['reason']}")
        say(f"question: {task['question_type']} about {_region(task)} [{task['policy']}] {task['reason']}")
    if task["question_type"] != "SEGMENT":
        raise DemoFailed(f"the dialog asked no SEGMENT question in 5 answers (last: {task['question_type']})")
    return task


def _snapshot_for_training(client: GatewayClient, project: str, by_id: dict, sessions: list[dict], say) -> dict:
    """Sessions until there are MIN_SESSIONS and the training service's snapshot of the project holds a
    training image and a held-out one (the split is a hash of each image id); waits for the submitted
    annotations to reach it."""
    while len(sessions) < MIN_SESSIONS:
        say(f"a few more images before training ({len(sessions)} of {MIN_SESSIONS} annotated): the next question")
        sessions.append(_session(client, project, by_id, say))
    path = f"/v1/projects/{project}/training/snapshots"
    while True:
        annotated = len({s["image_id"] for s in sessions})
        deadline, snapshot = time.monotonic() + 60, None
        while snapshot is None or snapshot["image_count"] < annotated:  # the training queue stores them
            if time.monotonic() > deadline:
                raise DemoFailed(f"the training service holds {snapshot['image_count'] if snapshot else 0} of the "
                                 f"{annotated} annotated images after 60 s: its worker does not store them")
            try:
                snapshot, ms = _timed(lambda: client.request("POST", path))
            except GatewayError as exc:
                if exc.status != 404:
                    raise DemoFailed(f"training snapshot: {exc.message}") from None
                snapshot = None
            if snapshot is None or snapshot["image_count"] < annotated:
                time.sleep(0.5)
        say(f"snapshot {snapshot['snapshot_id'][:8]} ({ms:.0f} ms): {snapshot['annotation_count']} annotations on "
            f"{snapshot['image_count']} images, {snapshot['train_image_count']} to train on, "
            f"{snapshot['heldout_image_count']} held out ({snapshot['heldout_percent']}% by a hash of split key "
            f"{snapshot['split_key']!r} and the image id)")
        if snapshot["train_image_count"] and snapshot["heldout_image_count"]:
            return snapshot
        if len(sessions) >= MAX_SESSIONS:
            raise DemoFailed(f"{len(sessions)} images annotated and the snapshot still lacks a "
                             f"{'held-out' if snapshot['train_image_count'] else 'training'} image")
        say("a job needs a training and a held-out image: the next question")
        sessions.append(_session(client, project, by_id, say))


def _train(client: GatewayClient, project: str, snapshot: dict, wait_s: float, say) -> dict:
    """A small task-model job on the snapshot, waited for until the registry has its version: promoted past
    the gate or rejected by it (both are the loop working; a job that ends without a version is not)."""
    base = f"/v1/projects/{project}/training"
    t0 = time.perf_counter()
    job = client.request("POST", base, json={"kind": "task", "snapshot_id": snapshot["snapshot_id"],
                                             "config": TASK_JOB})
    say(f"training job {job['operation_id'][:8]}… started: task model, {TASK_JOB['steps']} steps at "
        f"{TASK_JOB['image_size']} px on snapshot {job['snapshot_id'][:8]}")
    deadline = time.monotonic() + wait_s
    while True:
        listed = client.request("GET", f"{base}/versions", params={"kind": "task"})
        mine = [v for v in listed["versions"] if v["operation_id"] == job["operation_id"]]
        if mine and mine[0]["state"] != "candidate":  # registered before the gate: a candidate is being judged
            break
        if time.monotonic() > deadline:
            raise DemoFailed(f"training job {job['operation_id']} made no model version within {wait_s:.0f} s "
                             "(failed, or the training worker is not running)" if not mine else
                             f"task model v{mine[0]['version']} is still a candidate after {wait_s:.0f} s "
                             f"({mine[0]['gate'].get('reason') or 'not judged by the gate'})")
        time.sleep(1.0)
    version, seconds = mine[0], time.perf_counter() - t0
    gate = version["gate"]
    verdict = gate.get("reason") or "no gate record"
    current = listed["current"].get("task", 0)
    if version["state"] == "promoted":
        say(f"task model v{version['version']} trained in {seconds:.1f} s and promoted ({verdict}); the training "
            "worker tells selection, which re-scores the project's pool with it")
    elif version["state"] == "rejected":
        say(f"task model v{version['version']} trained in {seconds:.1f} s and rejected by the promotion gate "
            f"({verdict}): the project stays on {f'task model v{current}' if current else 'no task model'}")
    else:
        raise DemoFailed(f"task model v{version['version']} ended {version['state']} ({verdict})")
    return {"version": version["version"], "state": version["state"], "current": current, "seconds": seconds,
            "figures": version["figures"], "gate": gate, "triton_model_name": version["triton_model_name"]}


def _next_question(client: GatewayClient, project: str, by_id: dict, training: dict, say,
                   scores_wait_s: float = SCORES_WAIT_S) -> dict:
    """The next question after the round. After a promotion it must come from the promoted version's scores
    (the question's ``selection_model_version``): selection re-scores the pool asynchronously, so a question
    picked from older scores (or drawn uniformly) is skipped and asked again until ``scores_wait_s``. After a
    rejection it is named with the version the project stays on and the scores it came from."""
    models = client.request("GET", f"/v1/projects/{project}/progress")
    if models.get("project_models_error"):
        raise DemoFailed(f"the project's model versions: {models['project_models_error']}")
    current = (models["project_models"].get("task") or {}).get("version", 0)
    if current != training["current"]:
        raise DemoFailed(f"the project is on task model v{current}, the registry said v{training['current']}")
    task, image, ms = _fetch(client, project, by_id)
    if training["state"] == "promoted":
        wanted = f"{training['triton_model_name']}:{training['version']}"
        deadline = time.monotonic() + scores_wait_s
        while task["selection_model_version"] != wanted:
            if time.monotonic() > deadline:
                raise DemoFailed(f"no question from task model v{training['version']}'s scores ({wanted}) within "
                                 f"{scores_wait_s:.0f} s: selection did not re-score the pool with it (is the "
                                 "selection worker running?)")
            say(f"  the question came from {_scores_of(task)}; waiting for selection to re-score the pool with "
                f"task model v{training['version']} ({wanted}): skipped, asking again in {SCORES_POLL_S:.0f} s")
            time.sleep(SCORES_POLL_S)
            task, image, ms = _fetch(client, project, by_id, skip=True)
        heading = f"next question, asked of task model v{training['version']}'s scores ({wanted})"
    else:
        served = f"task model v{current}" if current else "no task model"
        heading = f"next question, asked with {served}, from {_scores_of(task)}"
    _say_question(task, image, ms, say, heading)
    return {"task_model_version": current, "question_type": task["question_type"], "image": image["filename"],
            "selection_model_version": task["selection_model_version"]}


def _scores_of(task: dict) -> str:
    version = task.get("selection_model_version", "")
    return f"the scores of {version}" if version else "no model's scores (selection drew uniformly)"


def _wait_for_score(client: GatewayClient, project: str, session_id: str, wait_s: float, say) -> dict:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            items = client.review(project, 200)["items"]
        except GatewayError as exc:
            raise DemoFailed(f"quality: {exc.message}") from None
        mine = [i for i in items if i["session_id"] == session_id]
        if mine:
            item = mine[0]
            say(f"quality: predicted IoU {item['predicted_iou']:.3f}, P(below {item['threshold']:.2f}) "
                f"{item['probability_below_threshold']:.2f}; position {items.index(item) + 1} of {len(items)} "
                "in the review queue")
            return item
        if time.monotonic() > deadline:
            raise DemoFailed(f"quality: no score for the session within {wait_s:.0f} s")
        time.sleep(0.5)
