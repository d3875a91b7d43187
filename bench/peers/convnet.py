"""The MetaNeXt ConvNets of bench_convnet against timm's own MetaNeXt, in one run.

timm 1.0 (timm/models/inception_next.py: MetaNeXt, MetaNeXtStage, MetaNeXtBlock,
InceptionDWConv2d, MlpClassifierHead) built at bench_convnet's shape: one input channel, two
stages of depth 2 and widths 32 and 64, MLP ratio 4, head ratio 3, ten classes, batch 32 of 28×28,
float32. timm's stem is a 4×4 stride-4 patchify; here it is replaced by 2×2 stride 2, the patch
size of lowrank's preset, so that both nets have the same layers at the same resolutions. Two token
mixers, as bench_convnet: InceptionDWConv2d (timm's, square 3, band 11, branch ratio 1/8) and a 7×7
depthwise conv with bias (ConvNeXt's). Training is forward + cross-entropy + backward in train
mode (BatchNorm on batch statistics); inference is the eval forward under inference_mode.

lowrank's side is build/bin/bench_convnet, run by this script just before with the same thread
count; each side reports medians of calls timed in its own process (lowrank's interleaved, timm's
alternating the two nets). The rows: images/s of each, and lowrank / timm.

Run with the peer stack (after scripts/build --target bench_convnet):
  .venv-peers/bin/python bench/peers/convnet.py [--threads 2] [--repeats 15]
      [--out bench/peers/results/convnet.json]
"""
import argparse
import json
import os
import sys

import timm
import torch
import torch.nn.functional as F
from timm.models.inception_next import InceptionDWConv2d, MetaNeXt
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import lowrank_bench_results, paired_median_seconds  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DepthwiseConv7(nn.Conv2d):
    """ConvNeXt's token mixer: a 7×7 depthwise conv with bias (timm builds mixers as mixer(dim))."""

    def __init__(self, dim, **kwargs):
        super().__init__(dim, dim, kernel_size=7, padding=3, groups=dim, **kwargs)


def metanext(mixer, width):
    model = MetaNeXt(in_chans=1, num_classes=10, depths=(2, 2), dims=(width, 2 * width), token_mixers=mixer,
                     mlp_ratios=4)
    model.stem[0] = nn.Conv2d(1, width, kernel_size=2, stride=2)  # lowrank's patch size
    return model


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=os.path.join(ROOT, "bench/peers/results/convnet.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    ours = lowrank_bench_results(ROOT, "bench_convnet", ["--repeats", str(args.repeats)], args.threads)
    ours_rows = {r["row"]: r for r in ours["rows"]}

    batch, size, width = ours["batch"], ours["size"], ours["width"]
    torch.manual_seed(1)
    pixels = torch.rand(batch, 1, size, size)
    labels = torch.randint(0, 10, (batch,))
    nets = {"inception_dw": metanext(InceptionDWConv2d, width), "dwconv7": metanext(DepthwiseConv7, width)}

    def train_step(model):
        def run():
            model.train()
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(pixels), labels).backward()
        return run

    def infer(model):
        def run():
            model.eval()
            with torch.inference_mode():
                model(pixels)
        return run

    rows = []
    for row, make in (("metanext_train", train_step), ("metanext_infer", infer)):
        t_incep, t_dw = paired_median_seconds(make(nets["inception_dw"]), make(nets["dwconv7"]), args.repeats)
        for mixer, seconds in (("inception_dw", t_incep), ("dwconv7", t_dw)):
            ours_ips = ours_rows[row][f"{mixer}_images_s"]
            timm_ips = batch / seconds
            rows.append({"row": row, "mixer": mixer, "lowrank_images_s": ours_ips, "timm_images_s": timm_ips,
                         "lowrank_over_timm": ours_ips / timm_ips})
            print(f"{row:<16} {mixer:<13} lowrank {ours_ips:8.0f}  timm {timm_ips:8.0f} images/s  "
                  f"lowrank/timm {ours_ips / timm_ips:5.2f}x")
        timm_ratio = t_dw / t_incep
        rows.append({"row": row, "mixer": "inception_dw / dwconv7", "lowrank_ratio": ours_rows[row]["ratio"],
                     "timm_ratio": timm_ratio})
        print(f"{row:<16} InceptionNeXt / 7x7: lowrank {ours_rows[row]['ratio']:.2f}x  timm {timm_ratio:.2f}x")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "w") as f:
        json.dump({"benchmark": "convnet_peers", "timm": timm.__version__, "torch": torch.__version__,
                   "threads": args.threads, "repeats": args.repeats, "batch": batch, "size": size, "width": width,
                   "rows": rows}, f, indent=2)
        f.write("\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
