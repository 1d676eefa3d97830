#!/usr/bin/env python3
"""PyTorch reference for `vela vla bench`: the same OpenVLA architecture built from timm ViTs and
a transformers Llama, loading the same safetensors folder, timed stage by stage on the same GPU.

A benchmark, not a product path. It also checks numerical agreement against the values that
`vela vla bench --dump FILE` wrote (same pixel values and prompt ids, so preprocessing and
tokenisation are out of the comparison): projector output, first-token logits, greedy tokens.

usage: openvla_torch.py --model DIR --dump FILE [--iters N] [--compile] --save OUT.json
"""
import argparse
import json
import math
import statistics
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import timm
from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from transformers import LlamaConfig, LlamaForCausalLM

ACTION_TOKENS = 7
KNOWN_TIMM = {  # what vela's VitConfig::from_timm_id maps these ids to
    "vit_large_patch14_reg4_dinov2": "dinov2",
    "vit_so400m_patch14_siglip_224": "siglip",
}


def load_prefixed(files, prefix, device, dtype):
    out = {}
    for f in files:
        with safe_open(f, framework="pt", device="cpu") as st:
            for k in st.keys():
                if k.startswith(prefix):
                    out[k[len(prefix):]] = st.get_tensor(k).to(device=device, dtype=dtype)
    return out


def shard_files(model):
    idx = model / "model.safetensors.index.json"
    if idx.exists():
        return sorted({model / f for f in json.loads(idx.read_text())["weight_map"].values()})
    return [model / "model.safetensors"]


def build_tower(cfg, i, device, dtype):
    """A timm ViT; the released ids through timm.create_model, vela's small towers directly."""
    towers = cfg.get("vela_vision_towers")
    if towers is None:
        tid = cfg["timm_model_ids"][i].split(".")[0]
        if tid not in KNOWN_TIMM:
            raise SystemExit(f"unknown timm id {tid}")
        m = timm.create_model(tid, pretrained=False, num_classes=0, img_size=cfg["image_sizes"][i])
    else:
        t = towers[i]
        dino = str(t["kind"]).lower().startswith("dino")
        m = VisionTransformer(
            img_size=t["image_size"], patch_size=t["patch_size"], embed_dim=t["embed_dim"], depth=t["depth"],
            num_heads=t["num_heads"], mlp_ratio=t["mlp_hidden"] / t["embed_dim"], class_token=t["class_token"],
            reg_tokens=t["num_reg_tokens"], no_embed_class=dino, init_values=1e-5 if t["layer_scale"] else None,
            global_pool="map" if t["attn_pool"] else ("token" if t["class_token"] else "avg"), num_classes=0,
            norm_layer=partial(torch.nn.LayerNorm, eps=t["ln_eps"]),
        )
    return m


def load_model(model, device, dtype):
    cfg = json.loads((model / "config.json").read_text())
    files = shard_files(model)
    towers = []
    prefixes = ["vision_backbone.featurizer.", "vision_backbone.fused_featurizer."]
    for i in range(2 if cfg["use_fused_vision_backbone"] else 1):
        m = build_tower(cfg, i, device, dtype)
        sd = load_prefixed(files, prefixes[i], "cpu", torch.float32)
        # transformers renames LayerScale `gamma` to `scale_factor` on export; timm wants gamma.
        sd = {k.replace(".scale_factor", ".gamma"): v for k, v in sd.items()}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise SystemExit(f"tower {i}: missing {missing[:5]} unexpected {unexpected[:5]}")
        m = m.to(device=device, dtype=dtype).eval()
        n = len(m.blocks) - 2
        towers.append(partial(lambda mm, nn_, x: mm.get_intermediate_layers(x, n=[nn_])[0], m, n))
    proj_sd = load_prefixed(files, "projector.", device, dtype)
    n_fc = len([k for k in proj_sd if k.endswith(".weight")])
    fcs = []
    for j in range(1, n_fc + 1):
        w = proj_sd[f"fc{j}.weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], device=device, dtype=dtype)
        lin.load_state_dict({"weight": w, "bias": proj_sd[f"fc{j}.bias"]})
        fcs.append(lin)
    layers = []
    for j, lin in enumerate(fcs):
        layers.append(lin)
        if j < len(fcs) - 1:
            layers.append(torch.nn.GELU())
    projector = torch.nn.Sequential(*layers).eval()
    tc = cfg["text_config"]
    lcfg = LlamaConfig(
        vocab_size=tc["vocab_size"], hidden_size=tc["hidden_size"], intermediate_size=tc["intermediate_size"],
        num_hidden_layers=tc["num_hidden_layers"], num_attention_heads=tc["num_attention_heads"],
        num_key_value_heads=tc.get("num_key_value_heads") or tc["num_attention_heads"],
        rms_norm_eps=tc.get("rms_norm_eps", 1e-6), max_position_embeddings=tc.get("max_position_embeddings", 2048),
        rope_theta=tc.get("rope_theta", 10000.0), tie_word_embeddings=tc.get("tie_word_embeddings", False),
        bos_token_id=1, eos_token_id=2, pad_token_id=tc.get("pad_token_id"),
    )
    torch.set_default_dtype(dtype)
    with torch.device(device):
        llm = LlamaForCausalLM(lcfg)
    torch.set_default_dtype(torch.float32)
    sd = load_prefixed(files, "language_model.", device, dtype)
    missing, unexpected = llm.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary" not in k]
    if missing or unexpected:
        raise SystemExit(f"llm: missing {missing[:5]} unexpected {unexpected[:5]}")
    del sd
    llm.eval()
    return cfg, towers, projector, llm


class Runner:
    def __init__(self, towers, projector, llm, dtype):
        self.towers, self.projector, self.llm, self.dtype = towers, projector, llm, dtype
        self.embed = llm.get_input_embeddings()

    def vision(self, px):
        feats = [t(px[:, 3 * i:3 * i + 3]) for i, t in enumerate(self.towers)]
        return torch.cat(feats, dim=2)

    def prefill(self, patches, ids):
        emb = torch.cat([self.embed(ids[:, :1]), patches, self.embed(ids[:, 1:])], dim=1)
        out = self.llm(inputs_embeds=emb, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float(), out.past_key_values

    def step(self, tok, past):
        out = self.llm(input_ids=tok, past_key_values=past, use_cache=True)
        return out.logits[:, -1].float(), out.past_key_values

    @torch.inference_mode()
    def predict(self, px, ids, times=None):
        sync = torch.cuda.synchronize
        t = time.perf_counter()
        feats = self.vision(px)
        if times is not None:
            sync(); times["vision"].append((time.perf_counter() - t) * 1e3); t = time.perf_counter()
        patches = self.projector(feats)
        if times is not None:
            sync(); times["projector"].append((time.perf_counter() - t) * 1e3); t = time.perf_counter()
        logits, past = self.prefill(patches, ids)
        tok = logits.argmax(-1, keepdim=True)
        toks = [tok]
        if times is not None:
            sync(); times["prefill"].append((time.perf_counter() - t) * 1e3)
        for _ in range(ACTION_TOKENS - 1):
            t = time.perf_counter()
            logits, past = self.step(tok, past)
            tok = logits.argmax(-1, keepdim=True)
            toks.append(tok)
            if times is not None:
                sync(); times["token"].append((time.perf_counter() - t) * 1e3)
        return patches, torch.cat(toks, dim=1)


def stat(v):
    s = sorted(v)
    q = lambda p: s[round((len(s) - 1) * p)]
    return {"p50": q(0.5), "p95": q(0.95), "mean": statistics.fmean(s), "min": s[0], "n": len(s)}


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def time_runner(r, px, ids, iters, warmup):
    for _ in range(warmup):
        r.predict(px, ids)
    times = {"vision": [], "projector": [], "prefill": [], "token": []}
    total = []
    for _ in range(iters):
        r.predict(px, ids, times)
        torch.cuda.synchronize()
        t = time.perf_counter()
        r.predict(px, ids)
        torch.cuda.synchronize()
        total.append((time.perf_counter() - t) * 1e3)
    return {f"{k}_ms": stat(v) for k, v in times.items()} | {"total_ms": stat(total)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--dump", type=Path, required=True, help="vela vla bench --dump output")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd towers/projector/LLM")
    ap.add_argument("--save", type=Path, required=True)
    a = ap.parse_args()
    dev, dtype = "cuda", torch.bfloat16
    t0 = time.perf_counter()
    cfg, towers, projector, llm = load_model(a.model, dev, dtype)
    load_s = time.perf_counter() - t0
    r = Runner(towers, projector, llm, dtype)
    ref = load_file(str(a.dump))
    n_inputs = len([k for k in ref if k.startswith("tokens.")])

    # Agreement on the fixed input set, fed vela's own pixel values and prompt ids.
    agree = []
    with torch.inference_mode():
        for k in range(n_inputs):
            px = ref[f"pixel_values.{k}"].to(dev, dtype)
            ids = ref[f"input_ids.{k}"].to(dev).unsqueeze(0)
            patches, toks = r.predict(px, ids)
            logits, _ = r.prefill(patches, ids)
            vl, tl = ref[f"logits.{k}"].to(dev), logits[0]
            agree.append({
                "input": k,
                "projector_rel_l2": rel(ref[f"projector.{k}"].to(dev), patches.float()),
                "logits_rel_l2": rel(vl, tl),
                "logits_max_abs": float((vl - tl).abs().max()),
                "top1_vela": int(vl.argmax()), "top1_torch": int(tl.argmax()),
                "tokens_vela": ref[f"tokens.{k}"].tolist(), "tokens_torch": toks[0].tolist(),
            })
            agree[-1]["tokens_equal"] = agree[-1]["tokens_vela"] == agree[-1]["tokens_torch"]
            print(json.dumps(agree[-1]))

    px = ref["pixel_values.0"].to(dev, dtype)
    ids = ref["input_ids.0"].to(dev).unsqueeze(0)
    torch.cuda.reset_peak_memory_stats()
    eager = time_runner(r, px, ids, a.iters, a.warmup)
    eager["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    report = {
        "card": torch.cuda.get_device_name(), "torch": torch.__version__, "timm": timm.__version__,
        "transformers": __import__("transformers").__version__, "dtype": "bf16",
        "attn_implementation": llm.config._attn_implementation, "model": str(a.model), "load_s": load_s,
        "iters": a.iters, "eager": eager, "agreement": agree,
        "all_tokens_equal": all(x["tokens_equal"] for x in agree),
        "max_projector_rel_l2": max(x["projector_rel_l2"] for x in agree),
        "max_logits_rel_l2": max(x["logits_rel_l2"] for x in agree),
    }
    print(f"torch eager: total p50 {eager['total_ms']['p50']:.2f} ms (vision {eager['vision_ms']['p50']:.2f}, "
          f"projector {eager['projector_ms']['p50']:.2f}, prefill {eager['prefill_ms']['p50']:.2f}, "
          f"{eager['token_ms']['p50']:.2f} ms/token)")
    a.save.write_text(json.dumps(report, indent=1))  # eager results survive a compile that hangs
    if a.compile:
        try:
            t = time.perf_counter()
            r.vision = torch.compile(r.vision)
            r.projector = torch.compile(r.projector)
            r.step = torch.compile(r.step, dynamic=True)
            report["compiled"] = time_runner(r, px, ids, a.iters, a.warmup)
            report["compiled"]["compile_and_run_s"] = time.perf_counter() - t
            c = report["compiled"]
            print(f"torch.compile: total p50 {c['total_ms']['p50']:.2f} ms ({c['token_ms']['p50']:.2f} ms/token)")
        except Exception as e:  # a benchmark: report why compile did not work and keep eager
            report["compiled"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            traceback.print_exc()
    a.save.write_text(json.dumps(report, indent=1))
    print(f"wrote {a.save}; all tokens equal: {report['all_tokens_equal']}, max projector rel {report['max_projector_rel_l2']:.2e}, "
          f"max logits rel {report['max_logits_rel_l2']:.2e}")


if __name__ == "__main__":
    main()
