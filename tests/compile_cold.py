"""Run by `test_compile.py` in a fresh process: the loss compiled whole (fullgraph) on its very first
call, for every method, as a Module and as the functional form.

No loss is called eagerly before every compiled call is made, so nothing the library caches on a
first call (validated configurations, constants, network layouts) exists when dynamo traces; the
eager results they are compared to come last. Dynamo's backend is 'eager' (capture without code
generation): whether the loss compiles whole is decided by the capture, and the code inductor
generates is compared to eager mode in `test_compile.py`. Prints one line per failure, then "ok"."""

from __future__ import annotations

import sys

import torch

import softtopk

P_K, M = [0.5, 0.5], 4


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 12, generator=g), torch.randint(0, 12, (6,), generator=g)
    cases = {}
    for method in ("softmax", *softtopk.METHODS):
        p_k, m = ([1.0], None) if method == "softmax" else (P_K, M)
        cases[method, "module"] = softtopk.TopKCrossEntropyLoss(p_k, method, m=m)
        cases[method, "functional"] = (
            lambda x, y, p_k=p_k, method=method, m=m: softtopk.topk_cross_entropy(x, y, p_k, method, m=m))
    cases["defaults", "module"] = softtopk.TopKCrossEntropyLoss(P_K)
    compiled, failures = {}, []
    for name, fn in cases.items():
        torch._dynamo.reset()
        try:
            compiled[name] = torch.compile(fn, fullgraph=True, backend="eager")(x, y)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0]}")
    for name, value in compiled.items():
        if not torch.allclose(value, cases[name](x, y), rtol=1e-5, atol=1e-6):
            failures.append(f"{name}: compiled {float(value)} != eager {float(cases[name](x, y))}")
    print("\n".join(failures) or "ok")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
