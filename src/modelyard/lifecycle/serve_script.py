"""The HTTP server the Python runtimes' deployment images run (written into the image as serve.py)."""

from __future__ import annotations

# The server the Python runtimes' images run: standard-library HTTP plus the runtime's own package.
# It loads the model before it listens, so /health answers only once the model is ready.
SERVE_SCRIPT = '''"""HTTP server for a model deployed by modelyard: GET /health, POST /predict (JSON in, JSON out).

Environment: MODELYARD_RUNTIME (which library loads the model), MODEL_DIR (the model's files),
MODEL_FILE (its main weights file), MODELYARD_TASK (the transformers pipeline task), HOST, PORT.
The pytorch runtime holds weights only: set MODEL_FACTORY=package.module:function (code you add to
the image, returning the torch.nn.Module) to serve predictions; without it /predict answers 501.
"""

import importlib
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_DIR = os.environ.get("MODEL_DIR", "/model")
MODEL_FILE = os.environ.get("MODEL_FILE", "")
MAX_BODY = 64 * 1024 * 1024


def load_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MODEL_DIR, device="cpu")
    return lambda body: {"embeddings": model.encode(body["inputs"]).tolist()}


def load_transformers():
    from transformers import pipeline

    pipe = pipeline(os.environ.get("MODELYARD_TASK") or None, model=MODEL_DIR, device="cpu")
    return lambda body: {"outputs": pipe(body["inputs"], **body.get("parameters", {}))}


def load_diffusers():
    import base64
    import io

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(MODEL_DIR)

    def predict(body):
        image = pipe(body["inputs"], **body.get("parameters", {})).images[0]
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"image_png_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}

    return predict


def load_onnxruntime():
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(MODEL_FILE, providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
    names = [output.name for output in session.get_outputs()]

    def predict(body):
        feeds = {i.name: np.asarray(body["inputs"][i.name], dtype=kinds.get(i.type)) for i in session.get_inputs()}
        return {"outputs": {name: value.tolist() for name, value in zip(names, session.run(names, feeds))}}

    return predict


def tensor_predictor(module):
    import torch

    def predict(body):
        with torch.inference_mode():
            return {"outputs": module(torch.tensor(body["inputs"])).tolist()}

    return predict


def load_torchscript():
    import torch

    return tensor_predictor(torch.jit.load(MODEL_FILE, map_location="cpu").eval())


def load_pytorch():
    import torch

    if MODEL_FILE.endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = load_file(MODEL_FILE)
    else:
        state_dict = torch.load(MODEL_FILE, map_location="cpu", weights_only=True)
    factory = os.environ.get("MODEL_FACTORY", "")
    if not factory:
        return None
    module_name, _, function = factory.partition(":")
    model = getattr(importlib.import_module(module_name), function)()
    model.load_state_dict(state_dict)
    return tensor_predictor(model.eval())


LOADERS = {
    "sentence-transformers": load_sentence_transformers,
    "transformers": load_transformers,
    "diffusers": load_diffusers,
    "onnxruntime": load_onnxruntime,
    "torchscript": load_torchscript,
    "pytorch": load_pytorch,
}
PREDICT = []  # the loaded model's predict function, once loaded (none for weights only)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"status": "ok", "runtime": os.environ["MODELYARD_RUNTIME"]})
        else:
            self.reply(404, {"error": "not found: GET /health or POST /predict"})

    def do_POST(self):
        if self.path != "/predict":
            return self.reply(404, {"error": "not found: GET /health or POST /predict"})
        if not PREDICT:
            return self.reply(501, {"error": "weights only: set MODEL_FACTORY to serve predictions"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.reply(413, {"error": f"body larger than {MAX_BODY} bytes"})
        try:
            result = PREDICT[0](json.loads(self.rfile.read(length)))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            return self.reply(400, {"error": f"{type(exc).__name__}: {exc}"})
        return self.reply(200, result)

    def reply(self, status, value):
        data = json.dumps(value, default=str).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    predict = LOADERS[os.environ["MODELYARD_RUNTIME"]]()
    if predict is not None:
        PREDICT.append(predict)
    address = (os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080")))
    ThreadingHTTPServer(address, Handler).serve_forever()


if __name__ == "__main__":
    main()
'''
