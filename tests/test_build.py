"""The built library: build info, and (for CUDA builds) that its machine code targets sm_90a."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

import ember

INFO = ember.build_info()


@pytest.fixture
def cuda_library(request):
    """The CUDA build's library whose machine code is checked: `--cuda-library=PATH` (CI builds
    the sm_90a wheel in a folder of its own, beside the installed CPU-only build), else the
    installed one when it was built with CUDA."""
    path = request.config.getoption("--cuda-library")
    if path is not None:  # given: it must be there (CI's glob that found nothing must not skip these)
        if not pathlib.Path(path).is_file():
            pytest.fail(f"--cuda-library={path!r}: no such library")
        return path
    if not INFO["with_cuda"]:
        pytest.skip("built without CUDA (no GPU visible, EMBER_CUDA=0 or no CUDA torch); see --cuda-library")
    return str(next(pathlib.Path(ember._C.__file__).parent.glob("_C*.so")))


def _sass(library: str) -> str:
    tool = _cuobjdump()
    env = dict(os.environ, PATH=f"{os.path.dirname(tool)}{os.pathsep}{os.environ.get('PATH', '')}")  # finds nvdisasm
    return subprocess.run([tool, "--dump-sass", library], capture_output=True, text=True, check=True, env=env).stdout


def test_build_info():
    for key in ("version", "torch", "with_cuda", "cuda_archs", "cutlass", "torch_runtime"):
        assert key in INFO
    assert INFO["version"] == ember.__version__
    assert INFO["torch_runtime"].startswith(INFO["torch"].split("+")[0])


def test_ops_registered():
    ops = ember.ops_available()
    for op in (
        "ember::quantize_fp8",
        "ember::fp8_gemm",
        "ember::apollo_step_",
        "ember::apollo_projection_",
        "ember::cross_entropy_forward",
        "ember::cross_entropy_backward",
        "ember::cross_entropy_backward_",
        "ember::linear_cross_entropy_forward",
        "ember::linear_cross_entropy_backward",
        "ember::pack_mask",
        "ember::unpack_mask",
        "ember::masked_linear",
        "ember::masked_linear_backward",
    ):
        assert "CPU" in ops[op] and "Meta" in ops[op], (op, ops[op])
        if INFO["with_cuda"]:
            assert "CUDA" in ops[op], (op, ops[op])


def _cuobjdump():
    try:
        import nvidia.cu13

        candidate = pathlib.Path(list(nvidia.cu13.__path__)[0]) / "bin" / "cuobjdump"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("cuobjdump")
    if not found:
        pytest.fail("cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    return found


def _sass_functions(sass: str) -> dict:
    parts = re.split(r"\n\s*Function : (\S+)", sass)
    return dict(zip(parts[1::2], parts[2::2]))


def fp8_gemm_kernels(sass: str) -> list:
    """(kind, SASS) of the CUTLASS fp8 GEMMs (csrc/float8/gemm_*.cu), told apart by the traits
    their names carry (the two blockwise ones differ only in a scale layout, so both are
    "blockwise")."""
    kernels = []
    for name, body in _sass_functions(sass).items():
        if "GemmUniversal" not in name or "float_e4m3" not in name:
            continue
        if "BlockwiseFP8" in name:
            kind = "blockwise"
        elif "FastAccum" in name:
            kind = "fast small" if "ILi9" in name else "fast large"
        else:
            kind = "e5m2 promoted" if "float_e5m2" in name else "e4m3 promoted"
        kernels.append((kind, body))
    return kernels


def test_cuda_archs_default():
    if not INFO["with_cuda"]:
        pytest.skip("built without CUDA")
    assert "90a" in INFO["cuda_archs"].split(",")


def test_sass_targets_sm90a_for_every_kernel(cuda_library):
    elfs = subprocess.run([_cuobjdump(), "--list-elf", cuda_library], capture_output=True, text=True, check=True).stdout
    assert "sm_90a" in elfs, elfs
    sass = _sass(cuda_library)
    functions = re.findall(r"Function : (\S+)", sass)
    quantize = [f for f in functions if "quantize_region_kernel" in f]
    # 3 input types × (tensor, row: amax + cast phases; block, tile: fused) = 18 instantiations
    assert len(quantize) == 18, functions
    apollo = {
        k
        for k in ("projection_kernel", "channel_sumsq_kernel", "moments_kernel", "finalize_kernel", "update_kernel")
        if any("apollo" in f and k in f for f in functions)
    }
    assert len(apollo) == 5, functions
    ce = [f for f in functions if "ce" in f and ("forward_kernel" in f or "backward_kernel" in f)]
    assert len(ce) == 2, functions
    assert len(fp8_gemm_kernels(sass)) == 6, functions
    assert len([f for f in functions if "apply_bitmask_kernel" in f]) == 4, functions  # 1, 2, 4, 8-byte elements
    assert any("dequantize_kernel" in f for f in functions), functions
    # Local memory (LDL/STL) in our kernels means a register array spilled or was indexed at run time.
    assert not re.search(r"\b(LDL|STL)\b", sass), "local memory traffic in SASS"


def test_fp8_gemms_issue_pipelined_qgmma(cuda_library):
    """Every fp8 GEMM runs on the fp8 wgmma (QGMMA), and ptxas did not serialize it (its C7510
    warning): a serialized wgmma waits for itself, one WARPGROUP.DEPBAR per QGMMA, where the
    pipelined mainloop issues a k-block's QGMMAs back to back and waits once."""
    sass = _sass(cuda_library)
    kernels = fp8_gemm_kernels(sass)
    assert sorted(k for k, _ in kernels) == [
        "blockwise",
        "blockwise",
        "e4m3 promoted",
        "e5m2 promoted",
        "fast large",
        "fast small",
    ]
    for kind, body in kernels:
        qgmma = len(re.findall(r"\bQGMMA\.", body))
        depbar = len(re.findall(r"WARPGROUP\.DEPBAR", body))
        assert qgmma >= 8 and depbar < qgmma, (kind, qgmma, depbar)
        assert "HGMMA" not in body, kind
    assert all(("E5M2.E4M3" in body) == (kind == "e5m2 promoted") for kind, body in kernels)


def test_sparse_grouped_gemms_issue_pipelined_hgmma(cuda_library):
    """The block-mask grouped GEMMs (csrc/sparse/grouped_*.cu: forward, dgrad, wgrad) run on the
    bf16 wgmma (HGMMA), not serialized (see test_fp8_gemms_issue_pipelined_qgmma)."""
    sass = _sass(cuda_library)
    grouped = [
        body
        for name, body in _sass_functions(sass).items()
        if "GemmUniversal" in name and "PtrArray" in name and "bfloat16" in name
    ]
    assert len(grouped) == 3, [n for n in _sass_functions(sass) if "PtrArray" in n]
    for body in grouped:
        hgmma = len(re.findall(r"\bHGMMA\.", body))
        assert hgmma >= 8 and len(re.findall(r"WARPGROUP\.DEPBAR", body)) < hgmma
        assert "QGMMA" not in body


def _side_tile_kernels(functions: dict, transform: str) -> dict:
    """{"plain" | "transposed": SASS} of the side-tile-mainloop GEMMs (csrc/side_tile_mainloop.cuh)
    whose transform is `transform`: A K-major, or M-major (transposed)."""
    return {
        ("transposed" if "SideTileAMainloopILb1" in name else "plain"): body
        for name, body in functions.items()
        if "SideTileAMainloop" in name and transform in name
    }


def _check_side_tile_pipeline(kernels: dict) -> None:
    # wgmma from registers with two batches in flight (WARPGROUP.DEPBAR.LE gsb0, 0x2 after each;
    # a serialized wgmma would wait for 0x0 each time), and three TMA loads per stage (A, B, side).
    for kind, body in kernels.items():
        hgmma = len(re.findall(r"\bHGMMA\.64x256x16\.F32\.BF16 R\d+, R\d+,", body))  # A from registers
        waits = re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x\d)", body)
        assert hgmma == 16 and waits.count("0x2") == hgmma and waits.count("0x0") == 1, (kind, hgmma, waits)
        assert len(re.findall(r"\bUTMALDG\b", body)) >= 3, kind


def test_sparse_bitmask_gemms_mask_in_the_pipeline(cuda_library):
    """The bitmask GEMMs (csrc/sparse/bitmask_gemm_*.cu). Forward and dX: the side-tile mainloop
    with the mask transform. dW: the stock pipelined mainloop with the mask-keeping epilogue."""
    sass = _sass(cuda_library)
    functions = _sass_functions(sass)
    masked = _side_tile_kernels(functions, "MaskTransform")
    assert sorted(masked) == ["plain", "transposed"], [n for n in functions if "SideTile" in n]
    _check_side_tile_pipeline(masked)
    wgrad = [body for name, body in functions.items() if "Sm90AuxLoad" in name and "KeepWhereSet" in name]
    assert len(wgrad) == 1
    hgmma = len(re.findall(r"\bHGMMA\.", wgrad[0]))
    assert hgmma >= 8 and len(re.findall(r"WARPGROUP\.DEPBAR", wgrad[0])) < hgmma


def test_cross_entropy_softmax_gradient_gemms_in_the_pipeline(cuda_library):
    """The linear cross-entropy's softmax-gradient GEMMs (csrc/cross_entropy/softmax_grad_*.cu):
    dh (A = the logits, K-major) and dW (A = their transpose) on the side-tile mainloop, the
    gradient made in registers: ex2 (MUFU.EX2) between the shared loads and the HGMMAs."""
    sass = _sass(cuda_library)
    kernels = _side_tile_kernels(_sass_functions(sass), "SoftmaxGradTransform")
    assert sorted(kernels) == ["plain", "transposed"]
    _check_side_tile_pipeline(kernels)
    for kind, body in kernels.items():
        assert len(re.findall(r"MUFU\.EX2", body)) >= 16 * 8, kind  # one per A element of a block, per block
