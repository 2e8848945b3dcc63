"""ember: C++/CUDA kernels for cheaper LLM pre-training, as PyTorch ops.

``import ember`` loads the native library (registering ``torch.ops.ember.*``); the Python API
lives in ``ember.ops`` and the per-family packages.
"""

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from . import _C
from . import float8, losses, models, ops, optim, sparse  # noqa: E402
from .kernel_check import selftest  # noqa: E402

__version__ = _C.build_info()["version"]

REBUILD_WITH_CUDA = "EMBER_CUDA=1 pip install --no-build-isolation -e ."


def _warn_if_built_without_cuda() -> None:
    """A CPU-only build imported where a GPU is visible: say so once, with the rebuild command."""
    info = _C.build_info()
    if not info["with_cuda"] and torch.cuda.is_available():
        import warnings

        warnings.warn(
            f"ember was built without its CUDA kernels ({info['build_mode']}), but a GPU is visible: ember's "
            f"ops will refuse CUDA tensors. Rebuild from the source folder: {REBUILD_WITH_CUDA}",
            RuntimeWarning,
            stacklevel=3,
        )


_warn_if_built_without_cuda()


def __getattr__(name: str):
    """ember.data, ember.train and ember.patch load on first use: the trainer's dependencies
    (tqdm, tomli-w, matplotlib) are not needed to use the ops, nor transformers."""
    if name in ("data", "patch", "train"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ember' has no attribute {name!r}")


def build_info() -> dict:
    """How the native library was built, and the torch it runs with."""
    info = dict(_C.build_info())
    info["torch_runtime"] = torch.__version__
    info["gpu"] = torch.cuda.get_device_name() if cuda_available() else None
    return info


def cuda_available() -> bool:
    """True when the CUDA kernels were built and a GPU is visible."""
    return bool(_C.build_info()["with_cuda"]) and torch.cuda.is_available()


def ops_available() -> dict:
    """{op name: [dispatch keys with a kernel]} for every torch.ops.ember op."""
    keys = ("CPU", "CUDA", "Meta", "Autograd")
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("ember::"))
    return {n: [k for k in keys if torch._C._dispatch_has_kernel_for_dispatch_key(n, k)] for n in names}


__all__ = [
    "build_info",
    "cuda_available",
    "ops_available",
    "data",
    "float8",
    "losses",
    "models",
    "ops",
    "optim",
    "patch",
    "selftest",
    "sparse",
    "train",
    "__version__",
]
