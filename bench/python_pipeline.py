"""The straightforward Python pipeline teams write today, for `make bench` to compare with:
ffmpeg decodes sampled frames, numpy preprocesses, onnxruntime infers in batches, numpy
thresholds the probability map, and requests POSTs progress to the edge after every batch.
Prints {"frames": n, "seconds": s} on stdout. Not part of the product."""

import argparse
import json
import subprocess
import time

import numpy as np
import onnxruntime as ort
import requests


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--fps", type=float, required=True)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--mean", type=float, nargs=3, required=True)
    p.add_argument("--std", type=float, nargs=3, required=True)
    p.add_argument("--edge")
    p.add_argument("--token")
    p.add_argument("--analysis")
    a = p.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    mean = np.array(a.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(a.std, dtype=np.float32).reshape(1, 3, 1, 1)
    http = requests.Session()
    seq = 0

    def post(event):
        nonlocal seq
        if not a.edge:
            return
        seq += 1
        event["id"] = f"py-{seq}"
        r = http.post(
            f"{a.edge}/v1/analyses/{a.analysis}/events",
            json={"events": [event]},
            headers={"authorization": f"Bearer {a.token}"},
            timeout=10,
        )
        r.raise_for_status()

    started = time.perf_counter()
    post({"type": "started", "stages": [{"name": "infer", "weight": 1.0}]})
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", a.input, "-vf",
         f"fps={a.fps},scale={a.width}:{a.height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE,
    )
    frame_bytes = a.width * a.height * 3
    frames = 0
    regions = 0
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
        x = np.stack(batch).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        x = ((x - mean) / std).astype(np.float32)
        (prob,) = session.run(None, {input_name: x})
        regions += int((prob > 0.3).any(axis=(1, 2, 3)).sum())
        frames += len(batch)
        post({"type": "progress", "stage": "infer", "stage_progress": 0.5, "frames_done": frames})
    ffmpeg.wait()
    post({"type": "completed", "result": {"score": 0.9, "flagged": regions > 0,
          "frames_processed": frames, "total_frames": frames, "regions": [],
          "validation_required": False}})
    print(json.dumps({"frames": frames, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
