"""Writes a copy of a Llama-layout model whose attention layers are another token mixer.

  swap_mixer.py SRC_DIR DST_DIR MIXER 'OPTIONS_JSON'

config.json becomes LowrankMixerForCausalLM with layer_mixers MIXER and mixer_config {MIXER:
OPTIONS}; the weights are the same bytes with `.self_attn.` renamed `.mixer.` in the safetensors
header (tensor data untouched: offsets are relative to the data section). Tokenizer and generation
files are copied. Standard library only.
"""
import json
import os
import shutil
import struct
import sys


def main():
    src, dst, mixer, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    os.makedirs(dst, exist_ok=True)
    config = json.load(open(os.path.join(src, "config.json")))
    config["architectures"] = ["LowrankMixerForCausalLM"]
    config["model_type"] = "lowrank_mixer"
    config["layer_mixers"] = mixer
    config["mixer_config"] = {mixer: options}
    with open(os.path.join(dst, "config.json.tmp"), "w") as fh:
        json.dump(config, fh, indent=2)
    os.replace(os.path.join(dst, "config.json.tmp"), os.path.join(dst, "config.json"))
    with open(os.path.join(src, "model.safetensors"), "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        data = fh.read()
    renamed = {k.replace(".self_attn.", ".mixer."): v for k, v in header.items()}
    raw = json.dumps(renamed, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = os.path.join(dst, "model.safetensors.tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.write(data)
    os.replace(tmp, os.path.join(dst, "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


if __name__ == "__main__":
    main()
