"""Would a compiled step train one seed faster? ``torch.compile`` against the eager step, one shape.

Pads every paper-scale batch to a multiple of 8 positions (few shapes, each compiled once, in an
untimed first pass over the batches), then times one cxvae seed's training step on the same
batches two ways: eager (:func:`cxvae.train.stack_step`)
and with the loss, its noise included, compiled by ``torch.compile`` (inductor; its backward is
compiled too). Clipping and Adam stay eager in both. Prints the time of the first pass (compiling), the
number of graph breaks, and ms a step and groups/s of each; the compiled step rounds differently, so its losses
drift from the eager ones (not a check of correctness, only of speed).

Usage: ``.venv/bin/python scripts/compiled_step.py [preset] [threads]`` (default cxvae, 2).
"""
import sys
import time

import torch

from cxvae.config import make_run_config
from cxvae.data import GroupBatchLoader, generate_exam_scores
from cxvae.noise import word
from cxvae.train import SeedStack, adversarial_backward, clip_into_flat_, make_optimisers, make_step


def compiled_step_fn(stack: SeedStack, opt, critic_opt, tc):
    """:func:`cxvae.train.stack_step` of one seed with the noise and the loss compiled."""
    def losses(params, buffers, x, mask, step_word):
        noise = {n: t[0] for n, t in stack.draw_noise(mask[None], step_word).items()}
        return torch.func.functional_call(stack.template, (params, buffers), (x, mask, noise))

    compiled = torch.compile(losses, dynamic=False)
    first = lambda tensors: {n: t.squeeze(0) for n, t in tensors.items()}  # noqa: E731

    def step(batch, i):
        step_word = torch.tensor(word(i), dtype=torch.int32)
        out = compiled(first(stack.params), first(stack.buffers), batch.x, batch.mask, step_word)
        stack.zero_grad()
        critic = stack.critic_params if critic_opt is not None else []
        adversarial_backward(out["neg_elbo"], out["mi"], stack.vae_params, critic, tc.reg_weight)
        clip_into_flat_(stack.vae_params, stack.vae_flat, tc.grad_clip)
        opt.step()
        if critic_opt is not None:
            clip_into_flat_(stack.critic_params, stack.critic_flat, tc.grad_clip)
            critic_opt.step()
        return out
    return step, losses


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
        if name == "eager":
            step = make_step(stack, opt, critic_opt, cfg.train)
        else:
            step, losses = compiled_step_fn(stack, opt, critic_opt, cfg.train)
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
            b = batches[0]
            first = {n: t.squeeze(0) for n, t in stack.params.items()}
            buffers = {n: t.squeeze(0) for n, t in stack.buffers.items()}
            explained = torch._dynamo.explain(losses)(first, buffers, b.x, b.mask, torch.tensor(0, dtype=torch.int32))
            extra = f", {explained.graph_break_count} graph breaks, {warm:.0f} s for the first pass (compiling)"
        print(f"{name:>8}: {seconds * 1e3:6.2f} ms a step -> {batch_size / seconds:7,.0f} groups/s "
              f"(last loss {float(out['neg_elbo'].detach().flatten()[0]):.4f}){extra}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cxvae", int(sys.argv[2]) if len(sys.argv) > 2 else 2)
