"""What one guided iteration of the pixel preset costs, and what engineering takes off it (issue 22): the zoo pixel
DDPM's UNet forward, and forward + backward to its input (the UNet gradient), per image, on this machine.

    python benchmarks/unet_cost.py [--batch_size 16] [--threads 2] [--compile]

Rows: fp32 eager (as the presets run), bf16 autocast, channels_last, torch.compile (``--compile``: inductor, its
compile time not counted), and the fp32 forward + backward at other batch sizes; then the share of the forward +
backward's CPU time per kind of operator (torch.profiler): attention (scaled dot-product, its backward, bmm),
convolution (forward and backward), the rest. Times are the minimum of ``--repeat`` calls after one warm-up.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
from diffusers import UNet2DModel

UNET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "zoo", "fmnist-ddpm")


def per_image_ms(unet, batch: int, backward: bool, repeat: int, context=contextlib.nullcontext, channels_last=False):
    x, t, times = torch.randn(batch, 1, 32, 32), torch.tensor(500), []
    for _ in range(repeat + 1):
        z = x.clone().requires_grad_(backward)
        if channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        with context(), torch.set_grad_enabled(backward):
            out = unet(z, t).sample
            if backward:
                torch.autograd.grad(out.float().square().sum(), z)
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:]) / batch


def shares(unet, batch: int) -> dict[str, float]:
    """Share of CPU time per kind of operator in one forward + backward."""
    from torch.profiler import ProfilerActivity, profile
    per_image_ms(unet, batch, True, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        per_image_ms(unet, batch, True, 1)
    kinds = {"attention": 0.0, "convolution": 0.0, "other": 0.0}
    for event in prof.key_averages():
        name = event.key
        kind = ("attention" if "attention" in name or name == "aten::bmm" else
                "convolution" if "convolution" in name or "conv2d" in name else "other")
        kinds[kind] += event.self_cpu_time_total
    total = sum(kinds.values())
    return {k: v / total for k, v in kinds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    unet = UNet2DModel.from_pretrained(UNET, subfolder="unet").eval().requires_grad_(False)
    b, r = args.batch_size, args.repeat
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    rows = [("fp32 eager (the presets)", per_image_ms(unet, b, False, r), per_image_ms(unet, b, True, r)),
            ("bf16 autocast", per_image_ms(unet, b, False, r, bf16), per_image_ms(unet, b, True, r, bf16))]
    unet.to(memory_format=torch.channels_last)
    rows.append(("channels_last", per_image_ms(unet, b, False, r, channels_last=True),
                 per_image_ms(unet, b, True, r, channels_last=True)))
    unet.to(memory_format=torch.contiguous_format)
    if args.compile:
        compiled = torch.compile(unet)
        rows.append(("torch.compile", per_image_ms(compiled, b, False, r), per_image_ms(compiled, b, True, r)))
    print(f"zoo pixel DDPM UNet (32x32), batch {b}, {args.threads} CPU threads, ms per image "
          f"(minimum of {r} calls)\n")
    print("| variant | forward | forward + backward | against fp32 eager |\n| --- | --- | --- | --- |")
    for name, forward, both in rows:
        print(f"| {name} | {forward:.1f} | {both:.1f} | {both / rows[0][2]:.2f} |")
    print("\n| batch | forward + backward, ms per image |\n| --- | --- |")
    for batch in (1, 4, 16, 32):
        print(f"| {batch} | {per_image_ms(unet, batch, True, r):.1f} |")
    print("\n| operators | share of the forward + backward's CPU time |\n| --- | --- |")
    for kind, share in shares(unet, b).items():
        print(f"| {kind} | {100 * share:.0f}% |")


if __name__ == "__main__":
    main()
