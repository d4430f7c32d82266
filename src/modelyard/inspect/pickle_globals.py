"""Which globals a pickle may name: the allow-list of plain tensor checkpoints, the known-dangerous
imports, and `classify_global`, which ranks one (module, name) pair as safe, suspicious or unsafe.

The verdict rests on the allow-list (denylists are routinely bypassed); the unsafe tables only
rank what falls outside it. Sources (model-formats.md section 9): torch's `weights_only`
allow-list (`torch/_weights_only_unpickler.py`, `_get_allowed_globals`, read from torch 2.13),
picklescan's and modelscan's dangerous-global lists, and CPython's Python 2 name mapping
(`_compat_pickle`) that the unpickler applies to protocol 0-2 pickles.
"""

from __future__ import annotations

import _compat_pickle
from typing import Literal

Severity = Literal["safe", "suspicious", "unsafe"]

_TORCH_DTYPES = [
    "bfloat16",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bool",
    "complex128",
    "complex32",
    "complex64",
    "float16",
    "float32",
    "float4_e2m1fn_x2",
    "float64",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "int1",
    "int16",
    "int2",
    "int3",
    "int32",
    "int4",
    "int5",
    "int6",
    "int64",
    "int7",
    "int8",
    "qint32",
    "qint8",
    "quint2x4",
    "quint4x2",
    "quint8",
    "uint1",
    "uint16",
    "uint2",
    "uint3",
    "uint32",
    "uint4",
    "uint5",
    "uint6",
    "uint64",
    "uint7",
    "uint8",
]
_TORCH_TYPE_PREFIXES = [
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "ComplexDouble",
    "ComplexFloat",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "Short",
]
_QUANTIZED_STORAGES = ["QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8"]
_SPARSE_TENSOR_PREFIXES = ["BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short"]
_TENSOR_REBUILDERS = [
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_nested_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_cpu_tensor",
    "_rebuild_device_tensor_from_numpy",
]
_QSCHEMES = ["per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric"]


def _torch_allow_list() -> frozenset[str]:
    """What `torch.load(weights_only=True)` admits by default (torch 2.13), spelled out."""
    names = {
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch._tensor._rebuild_from_type_v2",
        "torch.per_channel_affine_float_qparams",
        "_codecs.encode",  # how protocol 2 spells bytes: encode(text, "latin1")
        "builtins.bytearray",
        "builtins.set",
        "builtins.frozenset",
        "builtins.complex",
        "builtins.slice",
    }
    names.update(f"torch.{dtype}" for dtype in _TORCH_DTYPES)
    names.update(f"torch.{scheme}" for scheme in _QSCHEMES)
    names.update(f"torch._utils.{rebuilder}" for rebuilder in _TENSOR_REBUILDERS)
    for prefix in _TORCH_TYPE_PREFIXES:
        names.update({f"torch.{prefix}Storage", f"torch.cuda.{prefix}Storage"})
        if not prefix.startswith("Complex"):
            names.update({f"torch.{prefix}Tensor", f"torch.cuda.{prefix}Tensor"})
    names.update(f"torch.{prefix}Storage" for prefix in _QUANTIZED_STORAGES)
    for prefix in _SPARSE_TENSOR_PREFIXES:
        names.update({f"torch.sparse.{prefix}Tensor", f"torch.cuda.sparse.{prefix}Tensor"})
    return frozenset(names)


# numpy's array and scalar reconstruction is allowed too: many checkpoints store metrics as numpy
# scalars. These callables only build arrays, scalars and dtypes from bytes; an object array's
# elements are pickled as objects of their own, whose globals are scanned like any other.
_NUMPY_ALLOWED = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
        "numpy.dtype",
    }
)

SAFE_GLOBALS: frozenset[str] = _torch_allow_list() | _NUMPY_ALLOWED

# Whole modules: every name in them and in their submodules is unsafe. They run code, reach the
# operating system or the network, or load further pickles.
UNSAFE_MODULES: frozenset[str] = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "_posixsubprocess",
        "commands",
        "popen2",
        "sys",
        "socket",
        "_socket",
        "shutil",
        "runpy",
        "pickle",
        "_pickle",
        "cPickle",
        "pickletools",
        "shelve",
        "pdb",
        "bdb",
        "pty",
        "tty",
        "ctypes",
        "_ctypes",
        "webbrowser",
        "urllib.request",
        "urllib2",
        "httplib",
        "http.client",
        "ftplib",
        "smtplib",
        "telnetlib",
        "xmlrpc",
        "requests",
        "aiohttp",
        "pip",
        "ensurepip",
        "pydoc",
        "importlib",
        "imp",
        "zipimport",
        "code",
        "codeop",
        "asyncio",
        "multiprocessing",
        "threading",
        "_thread",
        "signal",
        "marshal",
        "types",
        "timeit",
        "trace",
        "profile",
        "cProfile",
        "io",
        "_io",
        "tempfile",
        "dill",
        "cloudpickle",
        "joblib",
        "numpy.testing",
        "numpy.f2py",
        "numpy.distutils",
        "torch.hub",
        "torch.package",
        "torch.utils.cpp_extension",
        "pandas.io.pickle",
    }
)

# Single names that execute code, read or write files, or reach any attribute (a getattr chain).
UNSAFE_NAMES: frozenset[str] = frozenset(
    {
        f"builtins.{name}"
        for name in ["eval", "exec", "compile", "open", "getattr", "setattr", "delattr", "__import__", "breakpoint"]
    }
    | {
        f"builtins.{name}"
        for name in ["input", "globals", "locals", "vars", "apply", "execfile", "file", "reload", "help"]
    }
    | {"functools.partial", "functools.reduce", "_functools.partial", "_functools.reduce"}
    | {f"{module}.{name}" for module in ("operator", "_operator") for name in ("attrgetter", "itemgetter")}
    | {"operator.methodcaller", "_operator.methodcaller"}
    | {"torch.load", "torch.serialization.load", "torch.jit.load", "torch._C.import_ir_module"}
    | {"numpy.load", "numpy.fromfile", "numpy.loadtxt", "numpy.genfromtxt", "numpy.lib.npyio.load"}
    | {"pandas.read_pickle"}
)

# Module names a pickle can reach a dangerous module by, besides its own.
_ALIASES = {"__builtin__": "builtins", "exceptions": "builtins", "copy_reg": "copyreg"}
# Dunder names that only construct an object (what the NEWOBJ opcodes do); any other dunder is a
# way out to arbitrary objects (__globals__, __builtins__, __subclasses__, ...).
_HARMLESS_DUNDERS = frozenset({"__newobj__", "__newobj_ex__"})
_MAX_SEGMENTS = 32


def classify_global(module: str, name: str) -> tuple[Severity, str]:
    """The severity of `module.name` and why, under every name the unpickler could resolve it by."""
    candidates = _candidate_names(module, name)
    for candidate_module, candidate_name in candidates:
        reason = _unsafe_reason(candidate_module, candidate_name)
        if reason:
            return "unsafe", reason
    for candidate_module, candidate_name in candidates:
        if _is_allowed(candidate_module, candidate_name):
            return "safe", "on the allow-list of plain tensor checkpoints"
    return "suspicious", "not on the allow-list of plain tensor checkpoints (imports and may run code)"


def _candidate_names(module: str, name: str) -> list[tuple[str, str]]:
    """The pair as written plus the Python 3 names the unpickler maps protocol 0-2 names to."""
    candidates = [(module, name)]
    if (module, name) in _compat_pickle.NAME_MAPPING:
        candidates.append(_compat_pickle.NAME_MAPPING[(module, name)])
    elif module in _compat_pickle.IMPORT_MAPPING:
        candidates.append((_compat_pickle.IMPORT_MAPPING[module], name))
    root, _, rest = module.partition(".")
    if root in _ALIASES:
        candidates.append((_ALIASES[root] + ("." + rest if rest else ""), name))
    return candidates


def _unsafe_reason(module: str, name: str) -> str:
    qualified = f"{module}.{name}"
    covering = _covering_module(module)
    if covering:
        return f"imports from {covering}, which can run commands or reach the system"
    if qualified in UNSAFE_NAMES:
        return "can execute code or reach the system"
    return _attribute_path_reason(module, name)


def _covering_module(module: str) -> str:
    """The unsafe whole-module entry covering `module` (itself or a parent), or ''."""
    parts = module.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in UNSAFE_MODULES:
            return prefix
    return ""


def _attribute_path_reason(module: str, name: str) -> str:
    """Protocol 4+ resolves a dotted name attribute by attribute (`torch` + `serialization.os.system`
    reaches os.system), so every stretch of the path that reaches into the name is checked."""
    name_segments = name.split(".")
    if any(_is_dunder(segment) and segment not in _HARMLESS_DUNDERS for segment in name_segments):
        return "names a dunder attribute (a way out to arbitrary objects)"
    if len(name_segments) == 1:
        return ""
    module_segments = module.split(".")
    segments = module_segments + name_segments
    if len(segments) > _MAX_SEGMENTS:
        return f"an attribute path of {len(segments)} names"
    for start in range(len(segments)):
        for end in range(max(start, len(module_segments)) + 1, len(segments) + 1):
            stretch = ".".join(segments[start:end])
            if stretch in UNSAFE_MODULES or stretch in UNSAFE_NAMES:
                return f"an attribute path reaching {stretch}"
    return ""


def _is_dunder(segment: str) -> bool:
    return len(segment) > 4 and segment.startswith("__") and segment.endswith("__")


def _is_allowed(module: str, name: str) -> bool:
    if f"{module}.{name}" in SAFE_GLOBALS:
        return True
    # numpy >= 1.25 pickles dtypes of its own classes as numpy.dtypes.<Kind>DType.
    return module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()
