"""The benchmarks' per-operator wall clock (``benchmarks/common.py``): what it attributes where."""

import importlib.util
from pathlib import Path

import torch

# benchmarks/ is a folder of scripts, not a package: load its shared module from its file
_spec = importlib.util.spec_from_file_location("benchmarks_common", Path(__file__).resolve().parents[2] / "benchmarks" / "common.py")
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
op_clock = _common.op_clock


def test_a_linear_layers_three_matmuls_land_in_their_roles_with_their_flops():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(32, 8, requires_grad=True)
    q, k = torch.randn(2, 5, 4), torch.randn(2, 4, 6)  # an attention-like batched matmul
    clock = op_clock()
    with clock:
        layer(x).backward(torch.randn(32, 16))
        torch.bmm(q, k)
    report = clock.report(total_seconds=sum(clock.seconds.values()))  # the step: every op it timed
    ops = report["operators"]
    flops = 2 * 32 * 8 * 16
    expected = {"matmul: with bias (forward linear layers)": flops,
                "matmul: transposed first operand (weight gradients)": flops,
                "matmul: plain (input gradients, ...)": flops,
                "matmul: batched (attention)": 2 * 2 * 5 * 4 * 6}
    for role, f in expected.items():
        assert ops[role]["calls"] == 1, role
        assert ops[role]["flop"] == f, role
    assert x.grad is not None and layer.weight.grad.shape == (16, 8)  # the mode passed results through
    assert 0 < report["matmul_share"] < 1  # the bias-gradient sum and the transposes are not matmuls
    assert "sum" in ops and all(0 <= r["share"] < 1 for r in ops.values())
