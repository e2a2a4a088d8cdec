"""Would a compiled step train one seed faster? ``torch.compile`` against the eager step.

Pads every paper-scale batch to a multiple of 8 positions (a few shapes, each compiled once in an
untimed first pass over the batches), then times one seed's training step,
:func:`cxvae.train.stack_step`, on the same batches two ways: eager, and with the stack's noise
and loss (:meth:`~cxvae.train.SeedStack.draw_noise`, :meth:`~cxvae.train.SeedStack.losses`)
compiled by ``torch.compile`` (inductor; the loss's backward is compiled too). Clipping and Adam
stay eager in both. Prints the first pass's time (compiling), the graph breaks, and ms a step and
groups/s of each. The compiled step rounds differently, so its losses drift from the eager ones:
this measures speed, not correctness.

Usage: ``.venv/bin/python scripts/compiled_step.py [preset] [threads]`` (default cxvae, 2).
"""
import sys
import time

import torch

from cxvae.config import make_run_config
from cxvae.data import GroupBatchLoader, generate_exam_scores
from cxvae.noise import word
from cxvae.train import SeedStack, make_optimisers, stack_step


def step_fn(stack: SeedStack, opt, critic_opt, tc):
    """:func:`cxvae.train.stack_step` of one stack on a batch, the step number as an int32 tensor
    (as :class:`cxvae.train.GraphedStep` passes it), so that a compiled noise does not recompile."""
    def step(batch, i):
        x, mask = batch.x[None], batch.mask[None]
        return stack_step(stack, x, mask, opt, critic_opt, tc, torch.tensor(word(i), dtype=torch.int32))
    return step


def main(preset: str = "cxvae", threads: int = 2, n_steps: int = 100) -> None:
    torch.set_num_threads(threads)
    cfg = make_run_config(preset, scale="paper", device="cpu")
    batch_size = cfg.train.batch_size
    data = generate_exam_scores(batch_size * n_steps, seed=0)
    batches = list(GroupBatchLoader(data, batch_size, seed=0, k_multiple=8))
    widths = sorted({b.mask.shape[1] for b in batches})
    torch._dynamo.config.recompile_limit = max(8, len(widths))
    padding = 1 - sum(b.n_observations for b in batches) / sum(b.mask.numel() for b in batches)
    print(f"{preset}, one seed, {threads} threads, {len(batches)} paper-scale batches of {batch_size} groups "
          f"padded to {widths} positions ({padding:.1%} padding)")
    for name in ("eager", "compiled"):
        stack = SeedStack(cfg.model, [0], torch.device("cpu"))
        opt, critic_opt, _ = make_optimisers(stack, cfg.train, total_steps=10 * n_steps)
        if name == "compiled":  # the stack's own methods, compiled; stack_step calls them
            eager_noise, eager_losses = stack.draw_noise, stack.losses
            stack.draw_noise = torch.compile(stack.draw_noise, dynamic=False)
            stack.losses = torch.compile(stack.losses, dynamic=False)
        step = step_fn(stack, opt, critic_opt, cfg.train)
        start = time.perf_counter()
        for i, batch in enumerate(batches):  # untimed: compiles every shape
            step(batch, i)
        warm = time.perf_counter() - start
        start = time.perf_counter()
        for i, batch in enumerate(batches, start=len(batches)):
            out = step(batch, i)
        seconds = (time.perf_counter() - start) / n_steps
        extra = ""
        if name == "compiled":
            x, mask = batches[0].x[None], batches[0].mask[None]
            step_word = torch.tensor(0, dtype=torch.int32)
            breaks = (torch._dynamo.explain(eager_noise)(mask, step_word).graph_break_count
                      + torch._dynamo.explain(eager_losses)(x, mask, eager_noise(mask, step_word)).graph_break_count)
            extra = f", {breaks} graph breaks, {warm:.0f} s for the first pass (compiling)"
        print(f"{name:>8}: {seconds * 1e3:6.2f} ms a step -> {batch_size / seconds:7,.0f} groups/s "
              f"(last loss {float(out['neg_elbo'].detach().flatten()[0]):.4f}){extra}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cxvae", int(sys.argv[2]) if len(sys.argv) > 2 else 2)
