"""Deployment files of a production version: a Dockerfile, Kubernetes manifests and how to use them.

`write_deployment` picks the best serving runtime among those the caller found compatible (a fixed
order, best first: vllm, tgi, llama-cpp, sentence-transformers, onnxruntime, transformers,
diffusers, torchscript, pytorch) and writes, under the production tree's root:

    deployment/docker/Dockerfile          pinned base image, COPY of the model files, non-root USER,
                                          EXPOSE, HEALTHCHECK, the command that serves the model
    deployment/docker/serve.py            for the Python runtimes: a small HTTP server (SERVE_SCRIPT)
    deployment/kubernetes/deployment.yaml an apps/v1 Deployment and a Service
    deployment/README.md                  how to build, push and apply

The tree's root is the Docker build context. Before returning, everything is checked offline:
each YAML document parses (YAML 1.2 and 1.1 readers agree on it) and validates strictly against
the Kubernetes schema bundled with `kubernetes-validate`, and every COPY source exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInputError
from modelyard.lifecycle.model_card import block_yaml
from modelyard.lifecycle.serve_script import SERVE_SCRIPT
from modelyard.loaders import parse_yaml

__all__ = [
    "KUBERNETES_VERSION",
    "SERVING_RUNTIMES",
    "DeploymentFiles",
    "DeploymentSpec",
    "choose_runtime",
    "write_deployment",
]

# kubernetes-validate >= 1.30 bundles this version's schemas (the dependency's floor).
KUBERNETES_VERSION = "1.30"
SERVING_RUNTIMES = (
    "vllm",
    "tgi",
    "llama-cpp",
    "sentence-transformers",
    "onnxruntime",
    "transformers",
    "diffusers",
    "torchscript",
    "pytorch",
)
DOCKERFILE = "deployment/docker/Dockerfile"
SERVE_PY = "deployment/docker/serve.py"
MANIFEST = "deployment/kubernetes/deployment.yaml"
README = "deployment/README.md"
MODEL_DIR = "/model"
USER_ID = 10001  # numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd
MIB = 1024 * 1024
IMAGE_PLACEHOLDER = "IMAGE_REGISTRY"

PYTHON_IMAGE = "python:3.11.13-slim-bookworm"
TORCH_CPU = "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
_PYTHON_PACKAGES = {
    "sentence-transformers": "sentence-transformers==6.2.0",
    "onnxruntime": "onnxruntime==1.31.1",
    "transformers": "transformers==5.23.0 safetensors==0.8.0",
    "diffusers": "diffusers==0.42.1 transformers==5.23.0 safetensors==0.8.0",
    "torchscript": "",
    "pytorch": "safetensors==0.8.0",
}


@dataclass(frozen=True)
class _Runtime:
    """How one runtime is served: image, port, health path, the healthcheck and serving command."""

    image: str
    port: int
    health: str
    healthcheck: tuple[str, ...]  # the probe command; "{url}" is the health URL
    entrypoint: tuple[str, ...] = ()
    gpus: int = 0  # GPUs requested by default
    memory_overhead: int = 1024 * MIB  # beyond the weights: runtime, activations, caches


_PY_HEALTHCHECK = ("python3", "-c", "import urllib.request; urllib.request.urlopen('{url}', timeout=4)")
_CURL_HEALTHCHECK = ("curl", "-fsS", "--max-time", "4", "{url}")
# Base images are pinned to released tags; vLLM and TGI need a GPU (their images are CUDA builds).
_RUNTIMES = {
    "vllm": _Runtime("vllm/vllm-openai:v0.11.0", 8000, "/health", _PY_HEALTHCHECK,
                     ("vllm", "serve"), gpus=1, memory_overhead=4096 * MIB),
    # TGI's image keeps its own entrypoint (it activates the server's virtualenv first).
    "tgi": _Runtime("ghcr.io/huggingface/text-generation-inference:3.3.5", 8080, "/health", _CURL_HEALTHCHECK,
                    gpus=1, memory_overhead=4096 * MIB),
    "llama-cpp": _Runtime("ghcr.io/ggml-org/llama.cpp:server-b9603", 8080, "/health", _CURL_HEALTHCHECK,
                          ("/app/llama-server",), memory_overhead=512 * MIB),
    **{runtime: _Runtime(PYTHON_IMAGE, 8080, "/health", _PY_HEALTHCHECK) for runtime in _PYTHON_PACKAGES},
}  # fmt: skip


def _integer_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _string_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _resources_shape(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and set(value) <= {"requests", "limits"}
        and all(isinstance(section, Mapping) for section in value.values())
    )


# deployment_config: each key, what it must be, and its check.
CONFIG_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "runtime": ("a serving runtime among the compatible ones", _text),
    "image": ("the full image reference (default IMAGE_REGISTRY/<name>:<version>)", _text),
    "replicas": ("an integer from 0 to 10000", _integer_in(0, 10_000)),
    "port": ("the container port, an integer from 1 to 65535", _integer_in(1, 65535)),
    "service_port": ("the Service port, an integer from 1 to 65535", _integer_in(1, 65535)),
    "service_type": ("ClusterIP, NodePort or LoadBalancer", lambda v: v in ("ClusterIP", "NodePort", "LoadBalancer")),
    "resources": ("a mapping with requests and/or limits (cpu, memory, nvidia.com/gpu)", _resources_shape),
    "gpus": ("GPUs per replica, an integer from 0 to 64", _integer_in(0, 64)),
    "env": ("a mapping of environment variable names to string values", _string_mapping),
    "node_selector": ("a mapping of node label names to string values", _string_mapping),
    "tolerations": ("a list of Kubernetes tolerations", lambda v: isinstance(v, list)),
    "namespace": ("the Kubernetes namespace", _text),
    "args": ("extra arguments for the model server, a list of strings",
             lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v)),
}  # fmt: skip


@dataclass(frozen=True)
class DeploymentSpec:
    """What to deploy. `model_files` are relative to the production tree's root; `runtimes` the
    runtimes `config.compatibility()` found compatible; `weights_bytes` the weights' total size;
    `pipeline_tag` the Hub task (the transformers runtime builds that pipeline)."""

    name: str
    version: str
    model_files: Sequence[str]
    runtimes: Sequence[str]
    weights_bytes: int
    deployment_config: Mapping[str, Any] = field(default_factory=dict)
    pipeline_tag: str | None = None


@dataclass(frozen=True)
class DeploymentFiles:
    """What `write_deployment` wrote (paths relative to the tree's root). `runtime`, `image` and
    `port` are None and `skipped_reason` says why when no serving runtime is compatible."""

    files: tuple[str, ...]
    runtime: str | None
    image: str | None
    port: int | None
    kubernetes_version: str | None
    skipped_reason: str | None = None


def write_deployment(out_dir: Path, spec: DeploymentSpec) -> DeploymentFiles:
    """Write the deployment files under `out_dir` (the production tree's root) and check them."""
    config = _checked_config(spec.deployment_config)
    runtime_id = choose_runtime(spec.runtimes, config.get("runtime"))
    if runtime_id is None:
        reason = _no_runtime_reason(spec.runtimes)
        _write(out_dir / README, _skipped_readme(spec, reason))
        return DeploymentFiles((README,), None, None, None, None, reason)
    runtime = _RUNTIMES[runtime_id]
    port = int(config.get("port", runtime.port))
    image = str(config.get("image") or default_image(spec.name, spec.version))
    files = [DOCKERFILE]
    if runtime.image == PYTHON_IMAGE:
        _write(out_dir / SERVE_PY, SERVE_SCRIPT)
        files.append(SERVE_PY)
    _write(out_dir / DOCKERFILE, _dockerfile(spec, runtime_id, port, config))
    manifest = _manifest(spec, runtime_id, port, image, config)
    _write(out_dir / MANIFEST, manifest)
    _write(out_dir / README, _readme(spec, runtime_id, image, port, config))
    files += [MANIFEST, README]
    check_dockerfile_sources(out_dir / DOCKERFILE, out_dir)
    check_manifest(out_dir / MANIFEST)
    return DeploymentFiles(tuple(files), runtime_id, image, port, KUBERNETES_VERSION)


def choose_runtime(compatible: Sequence[str], requested: Any = None) -> str | None:
    """The serving runtime to deploy with: `requested` when given (it must be compatible and
    serving), else the first compatible one in SERVING_RUNTIMES order."""
    if requested is not None:
        if requested not in SERVING_RUNTIMES or requested not in compatible:
            serving = [r for r in SERVING_RUNTIMES if r in compatible]
            raise InvalidInputError(
                f"runtime {requested!r} cannot serve this version (compatible serving runtimes: "
                f"{', '.join(serving) or 'none'})",
                field="deployment_config.runtime",
            )
        return str(requested)
    return next((runtime for runtime in SERVING_RUNTIMES if runtime in compatible), None)


def default_image(name: str, version: str) -> str:
    return f"{IMAGE_PLACEHOLDER}/{k8s_name(name)}:{_tag(version)}"


# -- deployment_config ------------------------------------------------------------------------------


def _checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in config.items():
        if key not in CONFIG_KEYS:
            raise InvalidInputError(
                f"unknown key; known keys: {', '.join(CONFIG_KEYS)}", field=f"deployment_config.{key}"
            )
        expected, is_valid = CONFIG_KEYS[key]
        if not is_valid(value):
            raise InvalidInputError(f"must be {expected}, got {value!r}", field=f"deployment_config.{key}")
    return dict(config)


# -- names ------------------------------------------------------------------------------------------


def k8s_name(name: str) -> str:
    """A DNS-1035 label from an artifact name (what a Service name must be): lowercase letters,
    digits and '-', starting with a letter, at most 63 characters."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"
    if not label[0].isalpha():
        label = f"m-{label}"
    if len(label) > 63:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        label = label[:54].rstrip("-") + "-" + digest
    return label


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-._") or "unknown"


def _tag(version: str) -> str:
    """A Docker tag: [A-Za-z0-9_.-], not starting with '.' or '-', at most 128."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", version).lstrip(".-")[:128] or "latest"


# -- Dockerfile -------------------------------------------------------------------------------------


def _dockerfile(spec: DeploymentSpec, runtime_id: str, port: int, config: Mapping[str, Any]) -> str:
    runtime = _RUNTIMES[runtime_id]
    health_url = f"http://127.0.0.1:{port}{runtime.health}"
    lines = [
        f"# {spec.name} {spec.version}, served by {runtime_id}. Written by modelyard.",
        "# Build from the root of the production version (the build context):",
        f"#   docker build -f {DOCKERFILE} -t {default_image(spec.name, spec.version)} .",
        f"FROM {runtime.image}",
    ]
    if runtime.image == PYTHON_IMAGE:
        packages = _PYTHON_PACKAGES[runtime_id]
        install = f"pip install --no-cache-dir {TORCH_CPU}" if runtime_id != "onnxruntime" else ""
        if packages:
            install += (" \\\n && " if install else "") + f"pip install --no-cache-dir {packages}"
        lines.append(f"RUN {install}")
    lines.append(f"RUN useradd --uid {USER_ID} --user-group --create-home --shell /usr/sbin/nologin modelyard")
    for source, target in _copies(spec.model_files):
        lines.append(f"COPY {json.dumps([source, target])}")
    if runtime.image == PYTHON_IMAGE:
        lines.append(f"COPY {json.dumps([SERVE_PY, '/app/serve.py'])}")
    lines.append(_env_line(spec, runtime_id, port))
    lines += [f"USER {USER_ID}", f"EXPOSE {port}"]
    probe = [part.replace("{url}", health_url) for part in runtime.healthcheck]
    lines.append(f"HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 CMD {json.dumps(probe)}")
    if runtime.entrypoint:
        lines.append(f"ENTRYPOINT {json.dumps(list(runtime.entrypoint))}")
    lines.append(f"CMD {json.dumps(_server_args(spec, runtime_id, port, config))}")
    return "\n".join(lines) + "\n"


def _copies(model_files: Sequence[str]) -> list[tuple[str, str]]:
    """(source in the tree, target in the image): the files' common folder becomes MODEL_DIR."""
    files = sorted(posixpath.normpath(f) for f in model_files)
    root = posixpath.commonpath([posixpath.dirname(f) for f in files]) if files else ""
    return [(f, posixpath.join(MODEL_DIR, posixpath.relpath(f, root) if root else f)) for f in files]


def _in_image(spec: DeploymentSpec, suffixes: tuple[str, ...]) -> str | None:
    """The image path of the first model file with one of these suffixes."""
    for _, target in _copies(spec.model_files):
        if target.lower().endswith(suffixes) and not posixpath.basename(target).startswith("mmproj"):
            return target
    return None


def _env_line(spec: DeploymentSpec, runtime_id: str, port: int) -> str:
    env = {"HOME": "/home/modelyard", "HF_HOME": "/tmp/huggingface", "HF_HUB_OFFLINE": "1"}
    if _RUNTIMES[runtime_id].image == PYTHON_IMAGE:
        env |= {"MODEL_DIR": MODEL_DIR, "MODELYARD_RUNTIME": runtime_id, "PORT": str(port)}
        model_file = _in_image(spec, (".onnx", ".safetensors", ".pt", ".pth", ".bin"))
        if model_file:
            env["MODEL_FILE"] = model_file
        if spec.pipeline_tag:
            env["MODELYARD_TASK"] = spec.pipeline_tag
    return "ENV " + " ".join(f"{key}={json.dumps(value)}" for key, value in env.items())


def _server_args(spec: DeploymentSpec, runtime_id: str, port: int, config: Mapping[str, Any]) -> list[str]:
    served = k8s_name(spec.name)
    extra = list(config.get("args", []))
    if runtime_id == "vllm":
        args = [MODEL_DIR, "--served-model-name", served, "--host", "0.0.0.0", "--port", str(port)]
    elif runtime_id == "tgi":
        args = ["--model-id", MODEL_DIR, "--hostname", "0.0.0.0", "--port", str(port)]
    elif runtime_id == "llama-cpp":
        gguf = _in_image(spec, (".gguf",)) or f"{MODEL_DIR}/model.gguf"
        args = ["--model", gguf, "--alias", served, "--host", "0.0.0.0", "--port", str(port)]
        projector = next((t for _, t in _copies(spec.model_files) if posixpath.basename(t).startswith("mmproj")), None)
        if projector:
            args += ["--mmproj", projector]
    elif extra:
        raise InvalidInputError(
            f"the {runtime_id} runtime takes no server arguments (its serve.py reads env)",
            field="deployment_config.args",
        )
    else:
        return ["python3", "/app/serve.py"]
    return args + extra


def check_dockerfile_sources(dockerfile: Path, root: Path) -> None:
    """Every COPY source of the Dockerfile must be a file under `root` (the build context)."""
    for number, line in enumerate(dockerfile.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("COPY "):
            continue
        try:
            parts = json.loads(line[len("COPY ") :])
        except json.JSONDecodeError:
            raise InvalidInputError(f"line {number}: COPY is not in JSON form", path=dockerfile) from None
        for source in parts[:-1]:
            normal = posixpath.normpath(source)
            if normal.startswith("../") or normal.startswith("/") or not (root / normal).is_file():
                raise InvalidInputError(
                    f"line {number}: COPY source '{source}' does not exist under {root} (the build context)",
                    path=dockerfile,
                )


# -- Kubernetes -------------------------------------------------------------------------------------


def _manifest(spec: DeploymentSpec, runtime_id: str, port: int, image: str, config: Mapping[str, Any]) -> str:
    name = k8s_name(spec.name)
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": k8s_name(f"{spec.name}-{spec.version}"),
        "app.kubernetes.io/version": _label_value(spec.version),
        "app.kubernetes.io/managed-by": "modelyard",
    }
    selector = {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if "namespace" in config:
        metadata["namespace"] = config["namespace"]
    header = (
        f"# {spec.name} {spec.version} on Kubernetes ({runtime_id}). Written by modelyard.\n"
        f"# {IMAGE_PLACEHOLDER} is a placeholder: push the image built from {DOCKERFILE} to your registry and\n"
        f"# replace {IMAGE_PLACEHOLDER} below with it (or pass deployment_config image=...).\n"
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": int(config.get("replicas", 1)),
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(spec, runtime_id, port, image, config)},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": config.get("service_type", "ClusterIP"),
            "selector": selector,
            "ports": [{"name": "http", "port": int(config.get("service_port", 80)), "targetPort": "http"}],
        },
    }
    return header + block_yaml(deployment) + "---\n" + block_yaml(service)


def _pod_spec(
    spec: DeploymentSpec, runtime_id: str, port: int, image: str, config: Mapping[str, Any]
) -> dict[str, Any]:
    runtime = _RUNTIMES[runtime_id]
    probe = {"httpGet": {"path": runtime.health, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": key, "value": value} for key, value in dict(config.get("env", {})).items()],
        # Loading large weights takes minutes: the startup probe holds the others off for up to 30.
        "startupProbe": probe | {"failureThreshold": 180},
        "readinessProbe": probe | {"failureThreshold": 3},
        "livenessProbe": probe | {"failureThreshold": 6},
        "resources": _resources(spec, runtime, config),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if not container["env"]:
        del container["env"]
    pod: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    if runtime_id in ("vllm", "tgi"):  # their engines share tensors between processes through /dev/shm
        container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    if "node_selector" in config:
        pod["nodeSelector"] = dict(config["node_selector"])
    if "tolerations" in config:
        pod["tolerations"] = config["tolerations"]
    return pod


def _resources(spec: DeploymentSpec, runtime: _Runtime, config: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults from the weights' size (requests: weights x1.25 + the runtime's overhead; limits:
    weights x2 + overhead), then the caller's values on top, key by key."""
    weights = max(0, spec.weights_bytes)
    requests: dict[str, Any] = {"cpu": "1", "memory": _mebibytes(weights * 1.25 + runtime.memory_overhead)}
    limits: dict[str, Any] = {"memory": _mebibytes(weights * 2 + runtime.memory_overhead)}
    gpus = int(config.get("gpus", runtime.gpus))
    if gpus:
        limits["nvidia.com/gpu"] = gpus  # extended resources: requests default to the limit
    given = config.get("resources", {})
    requests |= dict(given.get("requests", {}))
    limits |= dict(given.get("limits", {}))
    return {"requests": requests, "limits": limits}


def _mebibytes(size: float) -> str:
    return f"{math.ceil(size / MIB)}Mi"


def check_manifest(path: Path) -> None:
    """Each document parses, YAML 1.1 and 1.2 readers agree on it, and it validates strictly
    against the Kubernetes schema of KUBERNETES_VERSION."""
    import kubernetes_validate  # type: ignore[import-untyped]
    import yaml  # type: ignore[import-untyped]

    text = path.read_text(encoding="utf-8")
    documents = [doc for doc in re.split(r"^---\n", text, flags=re.MULTILINE) if doc.strip()]
    for index, document in enumerate(documents, 1):
        value = parse_yaml(document, f"{path} (document {index})")
        if yaml.safe_load(io.StringIO(document)) != value:
            raise InvalidInputError(f"document {index} reads differently under YAML 1.1", path=path)
        if not isinstance(value, dict):
            raise InvalidInputError(f"document {index} is not a mapping", path=path)
        try:
            kubernetes_validate.validate(value, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top level)"
            raise InvalidInputError(
                f"{value.get('kind')} fails the Kubernetes {KUBERNETES_VERSION} schema at {where}: {exc.message}",
                path=path,
            ) from None
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            raise InvalidInputError(f"document {index}: {exc.message}", path=path) from None


# -- README -----------------------------------------------------------------------------------------


def _readme(spec: DeploymentSpec, runtime_id: str, image: str, port: int, config: Mapping[str, Any]) -> str:
    runtime = _RUNTIMES[runtime_id]
    name = k8s_name(spec.name)
    namespace = f" -n {config['namespace']}" if "namespace" in config else ""
    placeholder = image.startswith(IMAGE_PLACEHOLDER + "/")
    registry = "registry.example.com/models"
    build = image.replace(IMAGE_PLACEHOLDER, registry) if placeholder else image
    lines = [
        f"# Deploying {spec.name} {spec.version}",
        "",
        f"Served by **{runtime_id}** (`{runtime.image}`) on port {port}; health: `GET {runtime.health}`"
        + ('; predictions: `POST /predict` with JSON `{"inputs": ...}`.' if runtime.image == PYTHON_IMAGE else "."),
        "",
        "From the root of this version (the folder holding `deployment/`, the build context):",
        "",
        "```bash",
        f"docker build -f {DOCKERFILE} -t {build} .",
        f"docker push {build}",
    ]
    if placeholder:  # the manifest names the image by the placeholder until it is replaced
        lines.append(f"sed -i 's#{IMAGE_PLACEHOLDER}#{registry}#' {MANIFEST}")
    lines += [
        f"kubectl apply -f {MANIFEST}",
        f"kubectl rollout status deployment/{name}{namespace}",
        f"kubectl port-forward service/{name} 8080:{config.get('service_port', 80)}{namespace}",
        f"curl http://127.0.0.1:8080{runtime.health}",
        "```",
        "",
        f"Memory requests and limits follow from the weights ({spec.weights_bytes} bytes); `deployment_config`",
        f"changes them and more (keys: {', '.join(CONFIG_KEYS)}).",
    ]
    return "\n".join(lines) + "\n"


def _skipped_readme(spec: DeploymentSpec, reason: str) -> str:
    return f"""# Deploying {spec.name} {spec.version}

No Dockerfile or Kubernetes manifest was written: {reason}.

Serving runtimes modelyard writes deployments for: {", ".join(SERVING_RUNTIMES)}.
"""


def _no_runtime_reason(compatible: Sequence[str]) -> str:
    if not compatible:
        return "no runtime is compatible with this version"
    return f"none of its compatible runtimes ({', '.join(compatible)}) is a model server modelyard can deploy"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# -- serve.py ---------------------------------------------------------------------------------------
