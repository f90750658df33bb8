"""mmtok.nearest_code: every backend against a float64 reference, the tie rule, bad input, autograd,
the custom-op contract (one schema, opcheck, torch.compile without a graph break), the packaging of the compiled
library (no pybind11, abi3, torch.ops.load_library) and the fallback when the extension is missing."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pathlib
import re

import pytest
import torch

import mmtok
from mmtok.ops import _extension, backends, set_cpu_capability
from mmtok.ops.registration import NEAREST_CODE_SIGNATURE, OPS

ROOT = pathlib.Path(__file__).resolve().parents[1]

AVAILABLE = [b for b in backends.BACKENDS if backends.unavailable_reason(b, torch.device("cuda" if b == "cuda" else "cpu")) is None]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
METRICS = ["l2", "cosine", "dot"]


def device_for(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "cuda" else "cpu")


def float64_scores(x: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, K) distances in float64 from the inputs as given (already rounded to their dtype)."""
    x, c = x.double().cpu(), codebook.double().cpu()
    if metric == "cosine":
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return 1.0 - x @ c.T
    if metric == "dot":
        return -(x @ c.T)
    return torch.cdist(x, c).square()


def assert_nearest(x, codebook, metric, indices, distances, rel_tol):
    """Each chosen code is the float64 nearest, or within rounding of it; distances match float64."""
    d64 = float64_scores(x.reshape(-1, x.shape[-1]), codebook, metric)
    idx = indices.reshape(-1).cpu()
    assert idx.dtype == torch.int64 and distances.dtype == torch.float32
    assert int(idx.min()) >= 0 and int(idx.max()) < codebook.shape[0]
    chosen = d64.gather(1, idx[:, None]).squeeze(1)
    best = d64.min(dim=1).values
    # rounding scale of the expanded form: |x|^2 + |c|^2 for L2, |x| max|c| for dot, 1 for cosine
    if metric == "l2":
        scale = x.reshape(-1, x.shape[-1]).double().cpu().square().sum(-1) + codebook.double().cpu().square().sum(-1).max()
    elif metric == "dot":
        scale = x.reshape(-1, x.shape[-1]).double().cpu().norm(dim=-1) * codebook.double().cpu().norm(dim=-1).max()
    else:
        scale = torch.ones_like(best)
    gap = chosen - best
    assert bool((gap <= rel_tol * scale).all()), f"max excess distance {float((gap / scale).max()):.3e} (relative)"
    # wherever the float64 runner-up is clearly worse, the pick must be the float64 argmin itself
    if d64.shape[1] > 1:
        top2 = d64.topk(2, dim=1, largest=False).values
        clear = (top2[:, 1] - top2[:, 0]) > 10 * rel_tol * scale
        assert torch.equal(idx[clear], d64.argmin(dim=1)[clear]), "wrong code where the float64 margin is clear"
    torch.testing.assert_close(distances.reshape(-1).cpu().double(), chosen, rtol=2e-3 if x.dtype != torch.float32 else 1e-4, atol=1e-4 * float(scale.max()))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric", METRICS)
def test_matches_float64_reference(backend, dtype, metric, seed):
    device = device_for(backend)
    n, k, d = (70, 300, 8) if backend == "triton" else (517, 1000, 16)
    x = (torch.randn(n, d) * 3 + 0.5).to(dtype).to(device)
    codebook = (torch.randn(k, d) * 3).to(dtype).to(device)
    indices, distances = mmtok.nearest_code(x, codebook, metric=metric, backend=backend)
    assert indices.shape == (n,) and distances.shape == (n,)
    assert_nearest(x, codebook, metric, indices, distances, rel_tol=1e-5)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (1, 7, 3), (5, 1, 4), (33, 13, 3), (100, 97, 1), (40, 50, 37), (65, 29, 256), (3, 400, 32)])
def test_odd_sizes(backend, n, k, d, seed):
    device = device_for(backend)
    x, codebook = torch.randn(n, d, device=device), torch.randn(k, d, device=device)
    for metric in METRICS:
        indices, distances = mmtok.nearest_code(x, codebook, metric=metric, backend=backend)
        assert_nearest(x, codebook, metric, indices, distances, rel_tol=1e-5)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_leading_dims_and_non_contiguous(backend, seed):
    device = device_for(backend)
    base = torch.randn(4, 16, 6, 5, device=device)
    x = base.permute(0, 2, 3, 1)[:, ::2]  # (4, 3, 5, 16), non-contiguous, last dim strided
    assert not x.is_contiguous() and x.stride(-1) != 1
    codebook = torch.randn(16, 90, device=device).T[::2]  # (45, 16), non-contiguous
    indices, distances = mmtok.nearest_code(x, codebook, backend=backend)
    assert indices.shape == (4, 3, 5) and distances.shape == (4, 3, 5)
    assert_nearest(x, codebook, "l2", indices, distances, rel_tol=1e-5)
    ref, _ = mmtok.nearest_code(x.contiguous(), codebook.contiguous(), backend=backend)
    assert torch.equal(indices, ref)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_exact_ties_go_to_the_lowest_index(backend, seed):
    device = device_for(backend)
    k, d = 40, 8
    codebook = torch.randint(-3, 4, (k, d)).float()
    dup = torch.cat([codebook, codebook, codebook])  # every code appears three times
    x = torch.randint(-3, 4, (300, d)).float()
    indices, _ = mmtok.nearest_code(x.to(device), dup.to(device), backend=backend)
    assert int(indices.max()) < k, "a duplicate with a higher index won an exact tie"
    d64 = float64_scores(x, dup, "l2")
    first_min = (d64 == d64.min(dim=1, keepdim=True).values).float().argmax(dim=1)  # integer data: exact
    assert torch.equal(indices.cpu(), first_min)
    # equidistant distinct codes: the origin is at distance 1 from each unit vector
    units = torch.cat([torch.full((1, 4), 5.0), torch.eye(4), -torch.eye(4)])
    idx, dist = mmtok.nearest_code(torch.zeros(3, 4, device=device) + torch.tensor([0.0, 0, 0, 0], device=device), units.to(device), backend=backend)
    assert idx.tolist() == [1, 1, 1] and dist.tolist() == [1.0, 1.0, 1.0]
    # cosine: c and 2c normalise to the same vector exactly
    c = torch.randn(1, 6)
    cos_book = torch.cat([-c, 2 * c, c, 4 * c])
    idx, _ = mmtok.nearest_code(c.repeat(5, 1).to(device) * 3, cos_book.to(device), metric="cosine", backend=backend)
    assert idx.tolist() == [1] * 5
    # dot: duplicated codes tie exactly (integer data), the first copy wins; the largest inner product, not the
    # nearest, is chosen (4c beats c and 2c)
    idx, dist = mmtok.nearest_code(x.to(device), dup.to(device), metric="dot", backend=backend)
    assert int(idx.max()) < k
    first_max = (d64 := -(x.double() @ dup.double().T)).eq(d64.min(dim=1, keepdim=True).values).float().argmax(dim=1)
    assert torch.equal(idx.cpu(), first_max)
    idx, dist = mmtok.nearest_code(c.repeat(2, 1).to(device), cos_book.to(device), metric="dot", backend=backend)
    assert idx.tolist() == [3, 3]
    torch.testing.assert_close(dist.cpu(), -(4 * c * c).sum(-1).repeat(2).float())


@pytest.mark.parametrize("backend", AVAILABLE)
def test_bad_input_raises_value_error_naming_the_argument(backend):
    device = device_for(backend)
    x, codebook = torch.randn(10, 8, device=device), torch.randn(20, 8, device=device)
    cases = [
        (lambda: mmtok.nearest_code(torch.randn(10, 7, device=device), codebook, backend=backend), "D = 7"),
        (lambda: mmtok.nearest_code(x, codebook[:0], backend=backend), "empty"),
        (lambda: mmtok.nearest_code(x, codebook[0], backend=backend), "codebook must have shape"),
        (lambda: mmtok.nearest_code(x, codebook[None], backend=backend), "codebook must have shape"),
        (lambda: mmtok.nearest_code(torch.tensor(1.0, device=device), codebook, backend=backend), "x must have at least"),
        (lambda: mmtok.nearest_code(x.long(), codebook, backend=backend), "x must be a floating"),
        (lambda: mmtok.nearest_code(x, codebook, metric="manhattan", backend=backend), "metric"),
        (lambda: mmtok.nearest_code(x, codebook, backend="nope"), "backend"),
    ]
    bad_x = x.clone()
    bad_x[3, 2] = float("nan")
    bad_c = codebook.clone()
    bad_c[5, 1] = float("inf")
    if backend != "cuda":  # the CUDA kernel reports these with a device-side assertion (no host sync)
        cases += [
            (lambda: mmtok.nearest_code(bad_x, codebook, backend=backend), "x contains non-finite"),
            (lambda: mmtok.nearest_code(x, bad_c, backend=backend), "codebook contains non-finite"),
        ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.skipif(not _extension.has_cpu_kernel(), reason="mmtok._C not built")
def test_all_cpu_instruction_sets_agree(seed):
    x, codebook = torch.randn(300, 20) * 2, torch.randn(777, 20)
    results = {}
    try:
        for isa in ("avx512", "avx2", "portable"):
            set_cpu_capability(isa)
            for d in (8, 16, 32, 20, 64):
                xi, ci = torch.randn(130, d), torch.randn(301, d)
                for metric in METRICS:
                    idx, dist = mmtok.nearest_code(xi, ci, metric=metric, backend="cpp")
                    assert_nearest(xi, ci, metric, idx, dist, rel_tol=1e-5)
            results[isa] = mmtok.nearest_code(x, codebook, backend="cpp")[0]
    finally:
        set_cpu_capability("")
    assert_nearest(x, codebook, "l2", results["portable"], mmtok.nearest_code(x, codebook)[1], rel_tol=1e-5)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("metric", METRICS)
def test_gradients_of_distances(backend, metric, seed):
    device = device_for(backend)
    x = torch.randn(30, 6, device=device, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(11, 6, device=device, dtype=torch.float64, requires_grad=True)
    xf, cf = x.detach().float().requires_grad_(), codebook.detach().float().requires_grad_()
    idx, dist = mmtok.nearest_code(xf, cf, metric=metric, backend=backend)
    weights = torch.randn(30, device=device)
    (dist * weights).sum().backward()
    # hand-written float64 gradient of sum_i w_i * dist(x_i, c_idx_i)
    xd, cd = x.detach().double(), codebook.detach().double()
    xr, cr = xd.clone().requires_grad_(), cd.clone().requires_grad_()
    chosen = cr[idx]
    if metric == "l2":
        ref = ((xr - chosen) ** 2).sum(-1)
    elif metric == "dot":
        ref = -(xr * chosen).sum(-1)
    else:
        ref = 1 - (xr / xr.norm(dim=-1, keepdim=True) * chosen / chosen.norm(dim=-1, keepdim=True)).sum(-1)
    (ref * weights.double()).sum().backward()
    torch.testing.assert_close(xf.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cf.grad.double(), cr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", [b for b in AVAILABLE if b in ("cpp", "torch", "triton")])
def test_opcheck(backend, seed):
    op = OPS[backend]
    x, codebook = torch.randn(40, 8, requires_grad=True), torch.randn(25, 8, requires_grad=True)
    for metric in METRICS:
        torch.library.opcheck(op, (x, codebook, metric))
        torch.library.opcheck(op, (x.detach().bfloat16(), codebook.detach().bfloat16(), metric))
    torch.library.opcheck(op, (x.detach().double(), codebook.detach().half(), "l2"))


def test_one_schema_defined_in_cpp_and_python():
    """The compiled library and the Python fallback define the same `mmtok::nearest_code`; the backend is not an
    argument of it (it is chosen outside the traced op)."""
    text = (ROOT / "csrc" / "extension.cpp").read_text()
    assert f'm.def("nearest_code{NEAREST_CODE_SIGNATURE}");' in text
    expected = "mmtok::nearest_code" + NEAREST_CODE_SIGNATURE
    for op in (torch.ops.mmtok.nearest_code, torch.ops.mmtok.nearest_code_reference, torch.ops.mmtok.nearest_code_triton):
        assert str(op.default._schema) == expected.replace("nearest_code", op.default._schema.name.split("::")[1], 1)
    assert "backend" not in str(torch.ops.mmtok.nearest_code.default._schema)


def test_fake_kernel_checks_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, c = torch.empty(7, 5), torch.empty(11, 5)
        dist, idx = torch.ops.mmtok.nearest_code(x, c, "cosine")
        assert dist.shape == (7,) and dist.dtype == torch.float32 and idx.shape == (7,) and idx.dtype == torch.int64
        for args, message in [((x, torch.empty(11, 4), "l2"), "D = 5 but codebook has D = 4"),
                              ((x, torch.empty(0, 5), "l2"), "empty"),
                              ((x[0], c, "l2"), "x must be"),
                              ((x, c, "manhattan"), "metric")]:
            with pytest.raises(ValueError, match=message):
                torch.ops.mmtok.nearest_code(*args)


@pytest.mark.skipif(not _extension.has_cpu_kernel(), reason="mmtok._C not built")
def test_compiled_library_is_a_plain_op_library():
    """Packaged as pytorch/extension-cpp: CPU kernel registered in C++ for the CPU dispatch key, the helpers are
    ops, no pybind11 module, built against the stable ABI (abi3) and loadable with torch.ops.load_library."""
    path = _extension.load()[0]
    assert path.endswith(".abi3.so"), path
    assert torch._C._dispatch_has_kernel_for_dispatch_key("mmtok::nearest_code", "CPU")
    assert isinstance(torch.ops.mmtok.cpu_capability(), str) and isinstance(torch.ops.mmtok.with_cuda(), bool)
    assert b"pybind11" not in pathlib.Path(path).read_bytes()
    for source in (ROOT / "csrc").rglob("*.c*"):
        text = source.read_text()
        assert "PYBIND11" not in text and "torch/extension.h" not in text, source
        assert "mmtok_C" not in text, source
    assert not re.search(r"TORCH_LIBRARY\(", "".join(p.read_text() for p in (ROOT / "csrc").rglob("*.c*")
                                                   if p.name != "extension.cpp"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_compile_fullgraph(dtype, seed):
    """One graph (fullgraph=True: a graph break is an error) holding the backend's op, forward and backward."""
    codebook = torch.randn(64, 12, dtype=dtype)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    def tokenize(z):
        z = torch.tanh(z) * 2
        idx, dist = mmtok.nearest_code(z, codebook)
        return idx + 1, dist.mean()

    z = torch.randn(3, 17, 12, dtype=dtype)
    eager = tokenize(z)
    for backend in ("inductor", record):
        got = torch.compile(tokenize, fullgraph=True, backend=backend)(z)
        assert torch.equal(got[0], eager[0])
        torch.testing.assert_close(got[1], eager[1])
    expected = "nearest_code_reference" if dtype == torch.float64 or not _extension.has_cpu_kernel() else "nearest_code.default"
    assert len(graphs) == 1 and f"mmtok.{expected}" in graphs[0], graphs

    zg = z.clone().requires_grad_()
    loss = torch.compile(lambda v: tokenize(v)[1], fullgraph=True)(zg)
    loss.backward()
    ze = z.clone().requires_grad_()
    tokenize(ze)[1].backward()
    torch.testing.assert_close(zg.grad, ze.grad)


def test_import_falls_back_when_the_extension_is_missing():
    script = textwrap.dedent(
        """
        import sys, warnings, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "mmtok._C":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import mmtok
            info = mmtok.info()
            x, c = torch.randn(50, 4), torch.randn(9, 4)
            idx, _ = mmtok.nearest_code(x, c)
            again, _ = mmtok.nearest_code(x, c)
        assert not info["backends"]["cpp"]["available"], info
        assert "blocked for the test" in info["backends"]["cpp"]["reason"], info
        from mmtok.ops.registration import NEAREST_CODE_SIGNATURE
        assert str(torch.ops.mmtok.nearest_code.default._schema) == "mmtok::nearest_code" + NEAREST_CODE_SIGNATURE
        direct, _ = torch.ops.mmtok.nearest_code(x, c, "l2")[::-1]
        torch.library.opcheck(torch.ops.mmtok.nearest_code.default, (x.requires_grad_(), c, "cosine"))
        x = x.detach()
        ref = torch.cdist(x.double(), c.double()).argmin(1)
        assert torch.equal(idx, ref) and torch.equal(again, ref) and torch.equal(direct, ref)
        runtime = [w for w in caught if "compiled kernels unavailable" in str(w.message)]
        assert len(runtime) == 1, [str(w.message) for w in caught]
        print("fallback ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout


def test_info_reports_every_backend():
    report = mmtok.info()
    assert set(report["backends"]) == set(backends.BACKENDS)
    for name, entry in report["backends"].items():
        assert entry["available"] == (entry["reason"] is None), name
    out = subprocess.run([sys.executable, "-m", "mmtok", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and '"backends"' in out.stdout


def test_parameter_codebook_without_autograd_skips_the_op():
    """A module's codebook is an nn.Parameter (`weight.float()` of an fp32 Parameter is the Parameter): with grad
    mode off (no_grad, inference_mode) or requires_grad False, the lookup runs the op's implementation directly, so
    a fresh process never imports torch._dynamo (seconds of cold start). With autograd it still goes through the op
    and the codebook's gradient matches the float64 formula."""
    script = textwrap.dedent(
        """
        import sys, torch
        import mmtok
        torch.manual_seed(0)
        x, w = torch.randn(300, 8), torch.nn.Parameter(torch.randn(64, 8))
        ref = torch.cdist(x.double(), w.detach().double()).argmin(1)
        with torch.no_grad():
            a, da = mmtok.nearest_code(x, w.float())
            b, _ = mmtok.nearest_code(x, w, metric="cosine")
        with torch.inference_mode():
            c, _ = mmtok.nearest_code(x, w)
        frozen = torch.nn.Parameter(w.detach().clone(), requires_grad=False)
        d, _ = mmtok.nearest_code(x, frozen)  # grad mode on, but nothing requires grad
        assert torch.equal(a, ref) and torch.equal(c, ref) and torch.equal(d, ref), "wrong codes"
        expect = (x.double() - w.detach().double()[ref]).pow(2).sum(-1)
        assert torch.allclose(da.double(), expect, rtol=1e-5, atol=1e-5), "wrong distances"
        assert not da.requires_grad
        print(sorted(m for m in ("torch._dynamo",) if m in sys.modules))
        idx, dist = mmtok.nearest_code(x, w)  # autograd: the op path
        assert dist.requires_grad and torch.equal(idx, ref)
        dist.sum().backward()
        g = torch.zeros(64, 8, dtype=torch.float64).index_add_(0, ref, -2 * (x.double() - w.detach().double()[ref]))
        assert torch.allclose(w.grad.double(), g, rtol=1e-5, atol=1e-5), "wrong codebook gradient"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[]" and lines[-1] == "ok", out.stdout
