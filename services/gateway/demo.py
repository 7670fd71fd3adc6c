"""The demo walk: one annotation session through the whole loop over REST, as a person would do it
in the web annotator (question -> clicks -> mask -> byproducts -> quality score), with timings.

Sample photos ship with scikit-image (``skimage.data``); each has fixed clicks on its main object.
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


def sample_files() -> list[tuple[str, bytes]]:
    from skimage import data  # noqa: PLC0415 - heavy import, only for the demo

    files = []
    for name, (loader, _label, _clicks) in SAMPLES.items():
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(getattr(data, loader)())).convert("RGB").save(buffer, format="PNG")
        files.append((name, buffer.getvalue()))
    return files


def _timed(action: Callable):
    start = time.perf_counter()
    result = action()
    return result, (time.perf_counter() - start) * 1000


def walk(client: GatewayClient, say: Callable[[str], None], quality_wait_s: float = 20.0) -> dict:
    """Runs one session through the loop; returns what happened (for tests and the summary)."""
    labels = sorted({label for _loader, label, _c in SAMPLES.values()})
    client.create_project(PROJECT, "Demo (scikit-image sample photos)", labels, exist_ok=True)
    images, ms = _timed(lambda: client.upload(PROJECT, sample_files()))
    say(f"uploaded {len(images)} sample photos from scikit-image in {ms:.0f} ms "
        f"({sum(i['duplicate'] for i in images)} already there)")
    by_id = {i["image_id"]: i for i in images}

    question, ms = _timed(lambda: client.next_question(PROJECT))
    if question["exhausted"]:
        say(f"question ({ms:.0f} ms): every image is annotated; segmenting coffee.png again")
        image = images[0]
        session, ms = _timed(lambda: client.start_session(PROJECT, image_id=image["image_id"]))
    else:
        task = question["task"]
        image = by_id.get(task["image_id"], question["image"])
        say(f"question ({ms:.0f} ms): {task['question_type']} {image['filename']} "
            f"[{task['policy']}] {task['reason']}")
        task = _answer_until_segment(client, task, say)
        session, ms = _timed(lambda: client.start_session(PROJECT, task_id=task["task_id"]))
    _loader, label, clicks = SAMPLES.get(image["filename"], ("", "object", [(image["width"] / 2, image["height"] / 2, True)]))
    say(f"session {session['session_id']} started in {ms:.0f} ms ({image['width']}x{image['height']})")
    t0 = time.perf_counter()
    click_ms = []
    for x, y, positive in clicks:
        reply, ms = _timed(lambda: client.click(PROJECT, session["session_id"], x, y, positive,
                                                int((time.perf_counter() - t0) * 1000)))
        click_ms.append(ms)
        say(f"  click {'+' if positive else '-'} ({x}, {y}): mask {reply['stats']['area_px']} px, "
            f"round trip {ms:.0f} ms (Triton {reply['model_latency_ms']:.0f} ms, service "
            f"{reply['service_latency_ms']:.0f} ms), IoU with previous {reply['iou_with_previous']:.2f}")
    done, ms = _timed(lambda: client.finish(PROJECT, session["session_id"], "submitted", label))
    say(f"submitted as '{label}' in {ms:.0f} ms: mask stored; one AnnotationSubmitted event sent to the "
        f"byproducts (task {done['byproducts_operation_id'][:8]}…), quality (task {done['quality_operation_id'][:8]}…), "
        "selection and training queues, and to the dialog's when it asked the question")
    ingest = client.config()["byproducts_ingest"]
    say(f"byproducts: REST ingest at {ingest}" if ingest else
        "byproducts: the gateway has no REST ingest route yet; the finished session's summary went to the "
        "byproducts queue (the web annotator keeps its trajectory events in the tab)")
    score = _wait_for_score(client, session["session_id"], quality_wait_s, say)
    return {"session_id": session["session_id"], "image": image["filename"], "click_ms": click_ms,
            "area_px": reply["stats"]["area_px"], "score": score}


def _answer_until_segment(client: GatewayClient, task: dict, say: Callable[[str], None]) -> dict:
    """Answers the questions that need no clicks as a person would in the web annotator (a proposal: "no",
    so that the clicks correct it; a region or nothing to do: skipped) until a SEGMENT task is asked."""
    for _ in range(5):
        if task["question_type"] == "SEGMENT":
            return task
        if task["proposal_source"] or task["proposal"]:
            say(f"  proposal shown: {task['proposal_source'] or 'from the question'}; prompt: {task['prompt']}")
        body = {"verify": {"accepted": False}} if task["question_type"] == "VERIFY" else {"skip": {"reason": "demo"}}
        path = f"/v1/projects/{PROJECT}/tasks/{task['task_id']}/answer"
        reply, ms = _timed(lambda p=path, b=body: client.request("POST", p, json={**b, "seconds": 2.0}))
        say(f"answer ({ms:.0f} ms): {'no' if 'verify' in body else 'skip'}, {reply['dialog']} by the dialog")
        if reply["follow_up"]:
            task = reply["follow_up"]["task"]
        else:
            nxt = client.next_question(PROJECT)
            if nxt["exhausted"]:
                break
            task = nxt["task"]
        say(f"question: {task['question_type']} [{task['policy']}] {task['reason']}")
    return task


def _wait_for_score(client: GatewayClient, session_id: str, wait_s: float, say) -> dict | None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            items = client.review(PROJECT, 200)["items"]
        except GatewayError as exc:
            say(f"quality: {exc.message}")
            return None
        mine = [i for i in items if i["session_id"] == session_id]
        if mine:
            item = mine[0]
            say(f"quality: predicted IoU {item['predicted_iou']:.3f}, P(below {item['threshold']:.2f}) "
                f"{item['probability_below_threshold']:.2f}; position {items.index(item) + 1} of {len(items)} "
                "in the review queue")
            return item
        if time.monotonic() > deadline:
            say(f"quality: no score for the session within {wait_s:.0f} s")
            return None
        time.sleep(0.5)
