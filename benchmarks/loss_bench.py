"""Time and peak memory of transducer losses, forward + backward, on CPU.

Default case B=16, T=200, U=50, V=500 (the size the project trains at). Every path starts from the
same leaves, encoder logits ``am [B, T, V]`` and predictor logits ``lm [B, U+1, V]``, and uses the
parameter-free additive joint ``am + lm`` in HAT form, so the rows differ only in what the loss
path has to materialize:

* ``rnnt``   full lattice: ``[B, T, U+1, V]`` HAT log-probs -> :func:`rnnt_loss`
* ``tdt``    the same plus duration log-probs (5 durations) -> :func:`tdt_loss`
* ``pruned`` :func:`rnnt_loss_simple` -> ranges -> :func:`do_rnnt_pruning` ->
  ``[B, T, s_range, V]`` HAT log-probs -> :func:`rnnt_loss_pruned` (loss = simple*0.5 + pruned)

"total s" is forward + backward of the whole path (joint normalization included); "loss-fn s"
is the part spent inside the loss functions (forward + backward w.r.t. their inputs).
Each case runs in its own subprocess so the peak RSS (``ru_maxrss``) belongs to it alone; the
reported figure is peak RSS minus RSS after the inputs were created.

Run: ``python -m benchmarks.loss_bench`` or ``python benchmarks/loss_bench.py`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CASES = ("rnnt", "tdt", "pruned")


def _hat(logits: torch.Tensor) -> torch.Tensor:
    b = logits[..., :1]
    return torch.cat([F.logsigmoid(b), F.logsigmoid(-b) + logits[..., 1:].log_softmax(-1)], -1)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(case: str, B: int, T: int, U: int, V: int, s_range: int, reps: int) -> dict:
    from edgeasr.train.losses import (
        do_rnnt_pruning,
        get_rnnt_prune_ranges,
        rnnt_loss,
        rnnt_loss_pruned,
        rnnt_loss_simple,
        tdt_loss,
    )

    g = torch.Generator().manual_seed(0)
    am = torch.randn(B, T, V, generator=g).requires_grad_(True)
    lm = torch.randn(B, U + 1, V, generator=g).requires_grad_(True)
    am_d = torch.randn(B, T, 5, generator=g).requires_grad_(True)
    lm_d = torch.randn(B, U + 1, 5, generator=g).requires_grad_(True)
    y = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(T * 3 // 4, T + 1, (B,), generator=g)
    tl[0] = T
    ul = torch.randint(U * 3 // 4, U + 1, (B,), generator=g)
    ul[0] = U

    def leaf(x: torch.Tensor) -> torch.Tensor:
        return x.detach().requires_grad_(True)

    def step() -> tuple[float, float]:
        """Run the whole path; return (loss, seconds spent inside the loss functions only)."""
        t_loss = 0.0
        if case in ("rnnt", "tdt"):
            lp = _hat(am[:, :, None] + lm[:, None])
            lp_leaf = leaf(lp)
            t0 = time.perf_counter()
            if case == "rnnt":
                loss = rnnt_loss(lp_leaf, y, tl, ul)
                loss.backward()
                t_loss = time.perf_counter() - t0
                lp.backward(lp_leaf.grad)
            else:
                dlp = (am_d[:, :, None] + lm_d[:, None]).log_softmax(-1)
                dlp_leaf = leaf(dlp)
                loss = tdt_loss(lp_leaf, dlp_leaf, y, tl, ul)
                loss.backward()
                t_loss = time.perf_counter() - t0
                torch.autograd.backward((lp, dlp), (lp_leaf.grad, dlp_leaf.grad))
        else:
            t0 = time.perf_counter()
            simple, (px_grad, py_grad) = rnnt_loss_simple(lm, am, y, tl, ul)
            ranges = get_rnnt_prune_ranges(px_grad, py_grad, tl, ul, s_range)
            t_loss += time.perf_counter() - t0
            am_p, lm_p = do_rnnt_pruning(am, lm, ranges)
            lp = _hat(am_p + lm_p)
            lp_leaf = leaf(lp)
            t0 = time.perf_counter()
            pruned = rnnt_loss_pruned(lp_leaf, y, ranges, tl, ul)
            loss = 0.5 * simple + pruned
            loss.backward()
            t_loss += time.perf_counter() - t0
            lp.backward(lp_leaf.grad)
        return float(loss), t_loss

    base = _rss_mib()
    loss, _ = step()  # warm-up (also the first allocation of every buffer)
    times, loss_times = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        loss, t_loss = step()
        times.append(time.perf_counter() - t0)
        loss_times.append(t_loss)
    return {
        "case": case,
        "loss": loss,
        "time_s": min(times),
        "loss_time_s": min(loss_times),
        "peak_mib": _peak_rss_mib() - base,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--T", type=int, default=200)
    p.add_argument("--U", type=int, default=50)
    p.add_argument("--V", type=int, default=500)
    p.add_argument("--s-range", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--case", choices=CASES, help="(internal) run one case, print JSON")
    a = p.parse_args(argv)
    dims = (a.B, a.T, a.U, a.V, a.s_range, a.reps)
    if a.case:
        print(json.dumps(run_case(a.case, *dims)))
        return
    print(f"B={a.B} T={a.T} U={a.U} V={a.V} s_range={a.s_range} threads={torch.get_num_threads()}")
    print(f"{'case':8} {'total s':>9} {'loss-fn s':>10} {'peak MiB':>9} {'loss':>9}")
    for case in a.cases:
        cmd = [sys.executable, "-m", "benchmarks.loss_bench", "--case", case]
        cmd += [f"--B={a.B}", f"--T={a.T}", f"--U={a.U}", f"--V={a.V}"]
        cmd += [f"--s-range={a.s_range}", f"--reps={a.reps}"]
        root = Path(__file__).resolve().parents[1]  # so `-m benchmarks...` resolves
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{case:8} {r['time_s']:9.3f} {r['loss_time_s']:10.3f} "
            f"{r['peak_mib']:9.0f} {r['loss']:9.2f}"
        )


if __name__ == "__main__":
    main()
