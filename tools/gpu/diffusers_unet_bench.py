"""Times diffusers' SDXL UNet (eager, and torch.compile if asked) with random weights, with the
same shapes as `storymaker bench unet`, so both figures come from one run on one GPU.

    python diffusers_unet_bench.py --size 1024 --batch 2 --dtype bf16 --steps 20 [--compile]
"""
import argparse
import time

import torch
from diffusers import UNet2DConditionModel

SDXL = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SDXL).to("cuda", dtype).eval()
    n = sum(x.numel() for x in unet.parameters())
    b, lat = a.batch, a.size // 8
    sample = torch.randn(b, 4, lat, lat, device="cuda", dtype=dtype)
    t = torch.full((b,), 500.0, device="cuda")
    ctx = torch.randn(b, 77, 2048, device="cuda", dtype=dtype)
    cond = {"text_embeds": torch.randn(b, 1280, device="cuda", dtype=dtype),
            "time_ids": torch.tensor([[a.size, a.size, 0, 0, a.size, a.size]] * b, device="cuda", dtype=dtype)}
    runs = [("eager", unet)]
    if a.compile:
        runs.append(("torch.compile", torch.compile(unet)))
    for name, m in runs:
        with torch.inference_mode():
            for _ in range(a.warmup):
                m(sample, t, ctx, added_cond_kwargs=cond)
            torch.cuda.synchronize()
            times = []
            for _ in range(a.steps):
                s = time.perf_counter()
                m(sample, t, ctx, added_cond_kwargs=cond)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - s) * 1e3)
        times.sort()
        print(f"diffusers {name} unet size={a.size} batch={b} dtype={a.dtype} steps={a.steps} params={n/1e9:.2f}B: "
              f"mean {sum(times)/len(times):.2f} ms/step, median {times[len(times)//2]:.2f}, min {times[0]:.2f}")


if __name__ == "__main__":
    main()
