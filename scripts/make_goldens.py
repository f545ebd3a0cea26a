#!/usr/bin/env python3
"""Generate the golden fixtures under tests/golden/ from Hugging Face transformers' Mamba2ForCausalLM.

Usage:
    python3 scripts/make_goldens.py --out tests/golden [--cases hf_tiny_f32,ssm_bin_f32]

Every case is a tiny random-weight Mamba-2 model. The weights are re-drawn so that the model is
"interesting" (non-trivial dt, A, D, conv, norms; SSM states that carry information over many tokens),
written in the checkpoint format under test (HF safetensors, sharded HF safetensors, state-spaces
pytorch_model.bin or state-spaces model.safetensors), reloaded from disk as a check, and run through
transformers' torch path on the CPU in float32. The reference outputs go to golden.safetensors and
golden.json in the case directory (see tests/golden/README.md for the layout).

Reproducibility: everything is seeded from BASE_SEED + 1000 * case_index + seed_offset; torch runs
single-threaded with deterministic algorithms, so re-running with the same library versions
reproduces every file byte for byte (SHA256SUMS at the top of --out lists them).

Needs: torch, transformers (5.x), safetensors, numpy. No network, no GPU.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import shutil
import sys
from collections import OrderedDict

import numpy
import safetensors
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import transformers
from transformers import Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2
from transformers.utils import logging as hf_logging

BASE_SEED = 1234
N_NEW = 20                 # greedy continuation length
MIN_MARGIN = 1e-3          # regenerate a case (next seed offset) if a greedy top1-top2 margin is smaller
MIN_SENSITIVITY = 1e-2    # ... or if changing the first quarter of the prompt moves the last logits by less
MAX_SEED_TRIES = 20
CONV_KERNEL = 4
EPS = 1e-5

REFERENCE = "transformers Mamba2ForCausalLM torch path on CPU, float32"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------
CASES = [
    dict(name="hf_tiny_f32", index=1, fmt="hf", weights_dtype="float32",
         d_model=64, n_layer=2, head_dim=32, n_groups=1, d_state=16, chunk_size=16,
         vocab=128, tied=True, use_bias=False, prompt_len=37,
         dt_range=(1e-3, 1e-1), time_step_limit=None),
    dict(name="hf_groups_bf16_untied", index=2, fmt="hf", weights_dtype="bfloat16",
         d_model=64, n_layer=2, head_dim=16, n_groups=2, d_state=24, chunk_size=8,
         vocab=96, tied=False, use_bias=True, prompt_len=37,
         dt_range=(1e-3, 1e-1), time_step_limit=None),
    dict(name="ssm_bin_f32", index=3, fmt="ssm", container="bin", weights_dtype="float32",
         d_model=48, n_layer=2, head_dim=16, n_groups=1, d_state=20, chunk_size=32,
         vocab=250, pad_multiple=16, prompt_len=45,
         dt_range=(1e-3, 1e-1), time_step_limit=None),
    dict(name="ssm_bin_bf16_groups", index=4, fmt="ssm", container="bin", weights_dtype="bfloat16",
         d_model=64, n_layer=3, head_dim=16, n_groups=4, d_state=32, chunk_size=32,
         vocab=200, pad_multiple=16, prompt_len=70,
         dt_range=(1e-3, 1e-1), time_step_limit=None),
    # n_layer 2 (not 3) keeps the whole fixture set under 3 MB: one layer of this shape is 537 KB in f32.
    dict(name="hf_sharded_f32_dtlimit", index=5, fmt="hf", shards=2, weights_dtype="float32",
         d_model=128, n_layer=2, head_dim=64, n_groups=1, d_state=128, chunk_size=64,
         vocab=160, tied=True, use_bias=False, prompt_len=100,
         # even heads: long memory (small dt); odd heads: softplus(dt_bias) mostly above the 0.05 limit
         dt_range=[(1e-3, 1e-2), (3e-2, 3e-1)], time_step_limit=(0.0, 0.05)),
    dict(name="ssm_safetensors_f16", index=6, fmt="ssm", container="safetensors", weights_dtype="float16",
         d_model=64, n_layer=2, head_dim=32, n_groups=1, d_state=64, chunk_size=16,
         vocab=100, pad_multiple=16, prompt_len=33,
         dt_range=(1e-3, 1e-1), time_step_limit=None),
]

# Standard deviations of the re-drawn weights.
STD_EMBED = 0.5
STD_LM_HEAD = 0.3
STD_IN_PROJ = 0.3          # z, x, B, C rows
STD_IN_PROJ_DT = 0.1       # dt rows (kept small so softplus(dt + dt_bias) stays near softplus(dt_bias))
STD_OUT_PROJ = 0.25
STD_BIAS = 0.2
STD_BIAS_DT = 0.05
STD_CONV = 0.3
STD_NORM = 0.1


# ----------------------------------------------------------------------------------------------
# The gated-norm patch (spec 12.1): transformers' MambaRMSNormGated normalizes over the whole
# intermediate size and ignores n_groups; mamba_ssm normalizes each contiguous group of E/G channels.
# The patch is a no-op unless a module instance carries `golden_group_size`.
# ----------------------------------------------------------------------------------------------
_ORIG_GATED_FORWARD = modeling_mamba2.MambaRMSNormGated.forward


def _grouped_gated_forward(self, hidden_states, gate=None):
    group_size = getattr(self, "golden_group_size", None)
    if group_size is None:
        return _ORIG_GATED_FORWARD(self, hidden_states, gate)
    # mamba_ssm ops/triton/layernorm_gated.py::rms_norm_ref(norm_before_gate=False, group_size=E/G, upcast=True)
    input_dtype = hidden_states.dtype
    x = hidden_states.to(torch.float32)
    if gate is not None:
        x = x * F.silu(gate.to(torch.float32))
    shape = x.shape
    xg = x.reshape(*shape[:-1], shape[-1] // group_size, group_size)
    rstd = 1 / torch.sqrt(xg.square().mean(dim=-1, keepdim=True) + self.variance_epsilon)
    out = (xg * rstd).reshape(shape) * self.weight.to(torch.float32)
    return out.to(input_dtype)


modeling_mamba2.MambaRMSNormGated.forward = _grouped_gated_forward


def set_group_norm(model, n_groups, enabled=True):
    for layer in model.backbone.layers:
        norm = layer.mixer.norm
        if enabled and n_groups > 1:
            norm.golden_group_size = norm.weight.shape[0] // n_groups
        elif hasattr(norm, "golden_group_size"):
            del norm.golden_group_size


# ----------------------------------------------------------------------------------------------
# Optional decode-step dt clamp (for the time_step_limit case). transformers 5.17's torch decode
# (mamba2_selective_state_update) takes no dt_limit, so its decode step does not clamp dt, while the
# chunked prefill path does. This wrapper makes decode clamp too, to record what a consistent clamp gives.
# ----------------------------------------------------------------------------------------------
_ORIG_SSU = modeling_mamba2.mamba2_selective_state_update


class decode_dt_clamp:
    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        lo, hi = self.limit

        def clamped(state, hidden_states, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, z=None, **kw):
            if dt_bias is not None:
                dt = dt + dt_bias.to(dt.dtype)
            if dt_softplus:
                dt = F.softplus(dt)
            dt = torch.clamp(dt, min=lo, max=hi)
            return _ORIG_SSU(state, hidden_states, dt, A, B, C, D, z=z, dt_bias=None, dt_softplus=False, **kw)

        modeling_mamba2.mamba2_selective_state_update = clamped
        return self

    def __exit__(self, *exc):
        modeling_mamba2.mamba2_selective_state_update = _ORIG_SSU
        return False


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def versions():
    return OrderedDict([
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("safetensors", safetensors.__version__),
        ("numpy", numpy.__version__),
    ])


def fnum(x, digits=7):
    """A float for JSON, rounded to `digits` significant digits (stable text)."""
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(f"{x:.{digits}g}")


def write_json(path, obj, allow_nan=False):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, allow_nan=allow_nan))
        f.write("\n")


def padded_vocab(case):
    v = case["vocab"]
    m = case.get("pad_multiple")
    if case["fmt"] == "ssm" and m and v % m:
        v += m - v % m
    return v


def make_config(case):
    D = case["d_model"]
    kw = dict(
        vocab_size=padded_vocab(case),
        hidden_size=D,
        num_hidden_layers=case["n_layer"],
        expand=2,
        head_dim=case["head_dim"],
        num_heads=2 * D // case["head_dim"],
        n_groups=case["n_groups"],
        state_size=case["d_state"],
        conv_kernel=CONV_KERNEL,
        chunk_size=case["chunk_size"],
        tie_word_embeddings=case.get("tied", True),
        use_bias=case.get("use_bias", False),
        use_conv_bias=True,
        layer_norm_epsilon=EPS,
        residual_in_fp32=True,
    )
    if case.get("time_step_limit") is not None:
        kw["time_step_limit"] = tuple(case["time_step_limit"])
    return Mamba2Config(**kw)


def inv_softplus(y):
    return y + torch.log(-torch.expm1(-y))


@torch.no_grad()
def perturb(model, case, gen):
    """Re-draw every parameter (named_parameters order, tied lm_head appears once)."""
    H = model.config.num_heads
    ranges = case["dt_range"]
    if not isinstance(ranges, list):
        ranges = [ranges]
    # per-head log-uniform range for softplus(dt_bias), cycling through `ranges` over the heads
    log_lo = torch.tensor([math.log(ranges[h % len(ranges)][0]) for h in range(H)])
    log_hi = torch.tensor([math.log(ranges[h % len(ranges)][1]) for h in range(H)])
    done = []

    def randn(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    def rand(shape):
        return torch.rand(shape, generator=gen, dtype=torch.float32)

    for name, p in model.named_parameters():
        shp = tuple(p.shape)
        if name.endswith("embeddings.weight"):
            v = randn(shp, STD_EMBED)
        elif name == "lm_head.weight":
            v = randn(shp, STD_LM_HEAD)
        elif name.endswith("in_proj.weight"):
            v = randn(shp, STD_IN_PROJ)
            v[-H:] = randn((H, shp[1]), STD_IN_PROJ_DT)
        elif name.endswith("in_proj.bias"):
            v = randn(shp, STD_BIAS)
            v[-H:] = randn((H,), STD_BIAS_DT)
        elif name.endswith("out_proj.weight"):
            v = randn(shp, STD_OUT_PROJ)
        elif name.endswith("out_proj.bias"):
            v = randn(shp, STD_BIAS)
        elif name.endswith("conv1d.weight") or name.endswith("conv1d.bias"):
            v = randn(shp, STD_CONV)
        elif name.endswith("A_log"):
            v = torch.log(1.0 + 15.0 * rand(shp))                      # A = -uniform(1, 16)
        elif name.endswith("dt_bias"):
            dt = torch.exp(log_lo + (log_hi - log_lo) * rand(shp))
            v = inv_softplus(dt)                                       # softplus(dt_bias) log-uniform per head
        elif name.endswith(".D"):
            v = 1.0 + randn(shp, 0.1)
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            v = 1.0 + randn(shp, STD_NORM)
        else:
            raise RuntimeError(f"perturb: unhandled parameter {name}")
        p.copy_(v)
        done.append(name)
    return done


@torch.no_grad()
def round_weights(model, dtype):
    """Round every parameter through the storage dtype (the reference then computes in f32)."""
    if dtype == torch.float32:
        return
    for _, p in model.named_parameters():
        p.copy_(p.to(dtype).to(torch.float32))


def margin(logits_row):
    top = torch.topk(logits_row, 2).values
    return float(top[0] - top[1])


class DtRecorder:
    """Forward hooks on each mixer's in_proj: record softplus(dt + dt_bias) (before any clamp)."""

    def __init__(self, model):
        self.model = model
        self.records = []
        self.handles = []
        for i, layer in enumerate(model.backbone.layers):
            mixer = layer.mixer
            self.handles.append(mixer.in_proj.register_forward_hook(self._hook(i, mixer)))

    def _hook(self, i, mixer):
        def fn(_mod, _inp, out):
            dt = out[..., -mixer.num_heads:].float() + mixer.dt_bias.float()
            self.records.append((i, F.softplus(dt).detach().clone(), out.detach().clone()))
        return fn

    def clear(self):
        self.records = []

    def remove(self):
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------------------------
# Reference runs
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def cached_run(model, ids, real_vocab, n_new=N_NEW):
    """Prefill over the prompt (use_cache=True), then greedy one-token decode steps using the cache."""
    out = model(input_ids=ids[None], use_cache=True)
    logits = out.logits[0, :, :real_vocab].clone()
    cache = out.cache_params
    L = model.config.num_hidden_layers
    info = OrderedDict()
    info["cache_type"] = type(cache).__name__
    info["layer_type"] = type(cache.layers[0]).__name__
    info["conv_states_shape"] = list(cache.layers[0].conv_states[0].shape)
    info["recurrent_states_shape"] = list(cache.layers[0].recurrent_states[0].shape)
    info["conv_states_dtype"] = str(cache.layers[0].conv_states[0].dtype)
    info["recurrent_states_dtype"] = str(cache.layers[0].recurrent_states[0].dtype)
    conv = [cache.layers[i].conv_states[0][0].clone().contiguous() for i in range(L)]
    ssm = [cache.layers[i].recurrent_states[0][0].clone().contiguous() for i in range(L)]
    greedy, decode_logits, margins = [], [], []
    cur = logits[-1]
    for k in range(n_new):
        margins.append(margin(cur))
        tok = int(torch.argmax(cur))
        greedy.append(tok)
        if k == n_new - 1:
            break
        o = model(input_ids=torch.tensor([[tok]], dtype=torch.long), cache_params=cache, use_cache=True)
        cur = o.logits[0, -1, :real_vocab].clone()
        decode_logits.append(cur)
    return dict(logits=logits, conv=conv, ssm=ssm, greedy=greedy,
                decode_logits=torch.stack(decode_logits), margins=margins, cache_info=info)


@torch.no_grad()
def nocache_greedy(model, ids, real_vocab, n_new=N_NEW):
    """Greedy by full recompute (use_cache=False) of prompt + generated tokens at every step."""
    seq = ids.clone()
    greedy, step_logits, margins = [], [], []
    for _ in range(n_new):
        out = model(input_ids=seq[None], use_cache=False)
        cur = out.logits[0, -1, :real_vocab].clone()
        step_logits.append(cur)
        margins.append(margin(cur))
        tok = int(torch.argmax(cur))
        greedy.append(tok)
        seq = torch.cat([seq, torch.tensor([tok], dtype=seq.dtype)])
    return dict(greedy=greedy, step_logits=torch.stack(step_logits), margins=margins)


@torch.no_grad()
def last_logits(model, ids, real_vocab):
    return model(input_ids=ids[None], use_cache=False).logits[0, -1, :real_vocab].clone()


@torch.no_grad()
def full_logits(model, ids, real_vocab):
    return model(input_ids=ids[None], use_cache=False).logits[0, :, :real_vocab].clone()


# ----------------------------------------------------------------------------------------------
# Writers and reloaders
# ----------------------------------------------------------------------------------------------
def save_hf(model, case, case_dir):
    wdtype = DTYPES[case["weights_dtype"]]
    m = copy.deepcopy(model)
    set_group_norm(m, case["n_groups"], enabled=False)
    if wdtype != torch.float32:
        m = m.to(wdtype)
    shards = case.get("shards")
    if shards:
        total = sum(p.numel() * p.element_size() for p in m.parameters())
        max_shard = int(total * 0.6)      # HF packs tensors greedily in state_dict order
        m.save_pretrained(case_dir, max_shard_size=max_shard)
    else:
        m.save_pretrained(case_dir)
    notes = []
    gen_cfg = os.path.join(case_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
        notes.append("save_pretrained also wrote generation_config.json; it was removed (not needed)")
    files = sorted(f for f in os.listdir(case_dir) if f.endswith(".safetensors") or f.endswith(".index.json"))
    if shards:
        expect = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        expect += ["model.safetensors.index.json"]
        if sorted(files) != sorted(expect):
            raise RuntimeError(f"{case['name']}: save_pretrained wrote {files}, expected {expect}")
        weights_files = expect
    else:
        if files != ["model.safetensors"]:
            raise RuntimeError(f"{case['name']}: save_pretrained wrote {files}")
        weights_files = files
    return weights_files, notes


def ssm_state_dict(model, case, with_lm_head):
    wdtype = DTYPES[case["weights_dtype"]]

    def t(x):
        return x.detach().to(wdtype).contiguous().clone()

    sd = OrderedDict()
    emb = t(model.backbone.embeddings.weight)
    sd["backbone.embedding.weight"] = emb
    for i, layer in enumerate(model.backbone.layers):
        mx = layer.mixer
        pre = f"backbone.layers.{i}."
        # mamba_ssm state_dict order: Mamba2 own params, then its children; then Block.norm
        sd[pre + "mixer.dt_bias"] = t(mx.dt_bias)
        sd[pre + "mixer.A_log"] = t(mx.A_log)
        sd[pre + "mixer.D"] = t(mx.D)
        sd[pre + "mixer.in_proj.weight"] = t(mx.in_proj.weight)
        sd[pre + "mixer.conv1d.weight"] = t(mx.conv1d.weight)
        sd[pre + "mixer.conv1d.bias"] = t(mx.conv1d.bias)
        sd[pre + "mixer.norm.weight"] = t(mx.norm.weight)
        sd[pre + "mixer.out_proj.weight"] = t(mx.out_proj.weight)
        sd[pre + "norm.weight"] = t(layer.norm.weight)
    sd["backbone.norm_f.weight"] = t(model.backbone.norm_f.weight)
    if with_lm_head:
        sd["lm_head.weight"] = emb        # the same tensor: torch.save stores one shared storage
    return sd


def ssm_config_json(case):
    return OrderedDict([
        ("d_model", case["d_model"]),
        ("d_intermediate", 0),
        ("n_layer", case["n_layer"]),
        ("vocab_size", case["vocab"]),
        ("ssm_cfg", OrderedDict([
            ("layer", "Mamba2"),
            ("d_state", case["d_state"]),
            ("headdim", case["head_dim"]),
            ("ngroups", case["n_groups"]),
            ("chunk_size", case["chunk_size"]),
            ("expand", 2),
        ])),
        ("attn_layer_idx", []),
        ("attn_cfg", {}),
        ("rms_norm", True),
        ("residual_in_fp32", True),
        ("fused_add_norm", True),
        ("pad_vocab_size_multiple", case["pad_multiple"]),
        ("tie_embeddings", True),
    ])


def save_ssm(model, case, case_dir):
    write_json(os.path.join(case_dir, "config.json"), ssm_config_json(case))
    if case["container"] == "bin":
        sd = ssm_state_dict(model, case, with_lm_head=True)
        torch.save(sd, os.path.join(case_dir, "pytorch_model.bin"))
        return ["pytorch_model.bin"]
    sd = ssm_state_dict(model, case, with_lm_head=False)
    save_file(dict(sd), os.path.join(case_dir, "model.safetensors"), metadata={"format": "pt"})
    return ["model.safetensors"]


@torch.no_grad()
def reload_hf(case, case_dir):
    m = Mamba2ForCausalLM.from_pretrained(case_dir, dtype=torch.float32).eval()
    set_group_norm(m, case["n_groups"])
    return m


@torch.no_grad()
def reload_ssm(case, case_dir, weights_files):
    """Load the state-spaces file the way HF's load_hook would (embedding -> embeddings)."""
    path = os.path.join(case_dir, weights_files[0])
    wdtype = DTYPES[case["weights_dtype"]]
    if path.endswith(".bin"):
        sd = torch.load(path, map_location="cpu", weights_only=True)
        emb, head = sd["backbone.embedding.weight"], sd["lm_head.weight"]
        if emb.untyped_storage().data_ptr() != head.untyped_storage().data_ptr():
            raise RuntimeError("pytorch_model.bin: lm_head.weight does not share the embedding storage")
    else:
        sd = load_file(path)
        if "lm_head.weight" in sd:
            raise RuntimeError("model.safetensors should not hold lm_head.weight")
    for k, v in sd.items():
        if v.dtype != wdtype:
            raise RuntimeError(f"{k}: dtype {v.dtype}, expected {wdtype}")
    if "backbone.embeddings.weight" in sd:
        raise RuntimeError("state-spaces file should use backbone.embedding.weight")
    with open(os.path.join(case_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == case["vocab"]
    torch.manual_seed(0)
    m = Mamba2ForCausalLM(make_config(case)).eval()
    sd = {k.replace("backbone.embedding.", "backbone.embeddings."): v.float()
          for k, v in sd.items() if k != "lm_head.weight"}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"reload: missing {missing}, unexpected {unexpected}")
    if m.lm_head.weight.data_ptr() != m.backbone.embeddings.weight.data_ptr():
        raise RuntimeError("reload: lm_head not tied")
    set_group_norm(m, case["n_groups"])
    return m


# ----------------------------------------------------------------------------------------------
# One case
# ----------------------------------------------------------------------------------------------
def build(case, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = make_config(case)
    model = Mamba2ForCausalLM(cfg).eval()
    perturb(model, case, gen)
    round_weights(model, DTYPES[case["weights_dtype"]])
    set_group_norm(model, case["n_groups"])
    ids = torch.randint(0, case["vocab"], (case["prompt_len"],), generator=gen, dtype=torch.long)
    # a second prompt with the first quarter re-drawn, for the state-sensitivity check
    q = max(1, case["prompt_len"] // 4)
    ids_q = ids.clone()
    ids_q[:q] = (ids[:q] + 1 + torch.randint(0, case["vocab"] - 1, (q,), generator=gen)) % case["vocab"]
    ids_0 = ids.clone()
    ids_0[0] = (ids[0] + 1) % case["vocab"]
    return model, ids, ids_q, ids_0


def run_case(case, out_root, vers):
    name = case["name"]
    V = case["vocab"]
    for offset in range(MAX_SEED_TRIES):
        seed = BASE_SEED + 1000 * case["index"] + offset
        model, ids, ids_q, ids_0 = build(case, seed)
        rec = DtRecorder(model)
        ref = cached_run(model, ids, V)
        rec_records = rec.records
        rec.clear()
        nc = nocache_greedy(model, ids, V)
        rec.remove()
        margins = ref["margins"] + nc["margins"]
        clamped = None
        if case.get("time_step_limit") is not None:
            with decode_dt_clamp(case["time_step_limit"]):
                clamped = cached_run(model, ids, V)
            margins += clamped["margins"]
        # states must matter: late logits have to depend on early prompt tokens
        base_last = ref["logits"][-1]
        sens_q = float((last_logits(model, ids_q, V) - base_last).abs().max())
        sens_0 = float((last_logits(model, ids_0, V) - base_last).abs().max())
        if min(margins) >= MIN_MARGIN and sens_q >= MIN_SENSITIVITY:
            break
        print(f"[{name}] seed {seed}: min greedy margin {min(margins):.3g} (need {MIN_MARGIN}), "
              f"state sensitivity {sens_q:.3g} (need {MIN_SENSITIVITY}); next seed")
    else:
        raise RuntimeError(f"{name}: no seed with greedy margin >= {MIN_MARGIN} and sensitivity >= {MIN_SENSITIVITY}")

    notes = []
    checks = OrderedDict()

    # ---- cache vs no-cache consistency
    same_ids = ref["greedy"] == nc["greedy"]
    n_agree = next((k for k in range(N_NEW) if ref["greedy"][k] != nc["greedy"][k]), N_NEW)
    # step k of the no-cache run sees prompt + greedy[:k]; the cached run saw logits[-1] (k=0) or decode_logits[k-1]
    cached_steps = torch.cat([ref["logits"][-1:], ref["decode_logits"]])
    upto = min(n_agree + 1, N_NEW)   # steps whose inputs agree between the two runs
    diff = float((cached_steps[:upto] - nc["step_logits"][:upto]).abs().max())
    checks["greedy_cache_equals_nocache"] = same_ids
    checks["cache_vs_nocache_max_abs_logit_diff"] = fnum(diff, 4)
    checks["prefill_last_vs_nocache_max_abs_diff"] = fnum(float((ref["logits"][-1] - nc["step_logits"][0]).abs().max()), 4)
    if case["index"] == 1:
        assert same_ids, f"{name}: cached greedy {ref['greedy']} != no-cache greedy {nc['greedy']}"
        assert diff < 1e-4, f"{name}: cached decode logits differ from full recompute by {diff}"
    # full-sequence logits without cache must equal the cached prefill's
    fl = full_logits(model, ids, V)
    checks["prefill_cache_vs_nocache_full_max_abs_diff"] = fnum(float((fl - ref["logits"]).abs().max()), 4)

    # ---- conv state = last W raw (pre-conv, pre-activation) xBC columns of the prompt
    E = 2 * case["d_model"]
    conv_ok = True
    for i, _sp, proj in [r for r in rec_records if r[1].shape[-2] == case["prompt_len"]]:
        xbc = proj[0, :, E:E + ref["conv"][i].shape[0]]                       # [T, conv_dim]
        conv_ok &= bool(torch.equal(ref["conv"][i], xbc[-CONV_KERNEL:].transpose(0, 1)))
    checks["conv_state_equals_last_W_raw_xBC_columns"] = conv_ok
    assert conv_ok, f"{name}: conv_state is not the last W raw xBC columns"

    # ---- states matter
    checks["last_logits_change_when_first_quarter_of_prompt_changes"] = fnum(sens_q, 4)
    checks["last_logits_change_when_token0_changes"] = fnum(sens_0, 4)

    # ---- dt statistics (softplus(dt + dt_bias), before any clamp)
    pre = torch.cat([r[1].reshape(-1) for r in rec_records if r[1].shape[-2] == case["prompt_len"]])
    dec = [r[1].reshape(-1) for r in rec_records if r[1].shape[-2] == 1]
    dec = torch.cat(dec) if dec else torch.zeros(0)
    dt_stats = OrderedDict([
        ("prefill_min", fnum(pre.min(), 4)), ("prefill_max", fnum(pre.max(), 4)),
        ("prefill_median", fnum(pre.median(), 4)),
    ])
    lim = case.get("time_step_limit")
    if lim is not None:
        dt_stats["prefill_fraction_above_limit"] = fnum(float((pre > lim[1]).float().mean()), 4)
        dt_stats["decode_fraction_above_limit"] = fnum(float((dec > lim[1]).float().mean()), 4)

    # ---- the gated-norm patch matters for n_groups > 1
    if case["n_groups"] > 1:
        set_group_norm(model, case["n_groups"], enabled=False)
        unpatched = full_logits(model, ids, V)
        set_group_norm(model, case["n_groups"])
        checks["unpatched_hf_gated_norm_max_abs_logit_diff"] = fnum(float((unpatched - ref["logits"]).abs().max()), 4)
        notes.append(
            "transformers' MambaRMSNormGated ignores n_groups (normalizes over all E channels). Its forward was "
            "monkey-patched to mamba_ssm's rms_norm_ref(norm_before_gate=False, group_size=E/G): v = y*silu(z) in "
            f"fp32, each contiguous group of E/G = {2 * case['d_model'] // case['n_groups']} channels normalized by "
            "1/sqrt(mean(v^2)+eps), then times weight. Goldens use the per-group form.")

    # ---- write the checkpoint
    case_dir = os.path.join(out_root, name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    if case["fmt"] == "hf":
        weights_files, save_notes = save_hf(model, case, case_dir)
        notes += save_notes
        reloaded = reload_hf(case, case_dir)
    else:
        weights_files = save_ssm(model, case, case_dir)
        reloaded = reload_ssm(case, case_dir, weights_files)
    rl = full_logits(reloaded, ids, V)
    reload_diff = float((rl - ref["logits"]).abs().max())
    checks["reloaded_checkpoint_max_abs_logit_diff"] = fnum(reload_diff, 4)
    assert reload_diff < 1e-5, f"{name}: reloaded checkpoint gives different logits ({reload_diff})"

    # ---- golden tensors
    L = case["n_layer"]
    g = OrderedDict()
    g["input_ids"] = ids.to(torch.int32)
    g["logits"] = ref["logits"].float().contiguous()
    for i in range(L):
        g[f"conv_state.{i}"] = ref["conv"][i].float().contiguous()
        g[f"ssm_state.{i}"] = ref["ssm"][i].float().contiguous()
    g["greedy_ids"] = torch.tensor(ref["greedy"], dtype=torch.int32)
    g["decode_logits"] = ref["decode_logits"].float().contiguous()
    if clamped is not None:
        g["greedy_ids_nocache"] = torch.tensor(nc["greedy"], dtype=torch.int32)
        g["greedy_ids_decode_clamped"] = torch.tensor(clamped["greedy"], dtype=torch.int32)
        g["decode_logits_decode_clamped"] = clamped["decode_logits"].float().contiguous()
        cl_steps = torch.cat([clamped["logits"][-1:], clamped["decode_logits"]])
        n_agree_c = next((k for k in range(N_NEW) if clamped["greedy"][k] != nc["greedy"][k]), N_NEW)
        upto_c = min(n_agree_c + 1, N_NEW)
        checks["decode_clamped_greedy_equals_nocache"] = clamped["greedy"] == nc["greedy"]
        checks["decode_clamped_vs_nocache_max_abs_logit_diff"] = fnum(
            float((cl_steps[:upto_c] - nc["step_logits"][:upto_c]).abs().max()), 4)
        checks["decode_clamped_vs_unclamped_decode_max_abs_logit_diff"] = fnum(
            float((clamped["decode_logits"] - ref["decode_logits"]).abs().max()), 4)
        notes.append(
            "time_step_limit (0.0, 0.05): transformers 5.17 clamps dt = softplus(dt_raw + dt_bias) to the limit in "
            "the chunked (prefill / multi-token) path only; its single-token decode step "
            "(mamba2_selective_state_update) takes no dt_limit and does NOT clamp (as in mamba_ssm's decode kernel). "
            "greedy_ids/decode_logits are that cached reference (prefill clamped, decode unclamped). "
            "greedy_ids_nocache is greedy by full recompute (clamp at every position). "
            "greedy_ids_decode_clamped/decode_logits_decode_clamped use a decode step patched to clamp dt too "
            "(consistent semantics; should match the no-cache recompute).")
    for k, v in g.items():
        assert torch.isfinite(v.float()).all(), f"{name}: non-finite {k}"
    save_file(dict(g), os.path.join(case_dir, "golden.safetensors"))

    D = case["d_model"]
    E = 2 * D
    H = E // case["head_dim"]
    conv_dim = E + 2 * case["n_groups"] * case["d_state"]
    geom = OrderedDict([
        ("d_model", D), ("d_inner", E), ("n_heads", H), ("head_dim", case["head_dim"]),
        ("n_groups", case["n_groups"]), ("d_state", case["d_state"]), ("conv_kernel", CONV_KERNEL),
        ("chunk_size", case["chunk_size"]), ("conv_dim", conv_dim),
        ("d_in_proj", E + conv_dim + H), ("padded_vocab", padded_vocab(case)),
        ("tied", case.get("tied", True)), ("use_bias", case.get("use_bias", False)),
        ("time_step_limit", [fnum(x) for x in (lim if lim is not None else (0.0, float("inf")))]),
        ("eps", EPS),
    ])
    tensors = OrderedDict()
    for k, v in g.items():
        tensors[k] = OrderedDict([("dtype", str(v.dtype).replace("torch.", "")), ("shape", list(v.shape))])
    notes.append(f"cache after prefill: {ref['cache_info']['cache_type']} / {ref['cache_info']['layer_type']}: "
                 f"layers[i].conv_states[0] {ref['cache_info']['conv_states_shape']} "
                 f"({ref['cache_info']['conv_states_dtype']}), layers[i].recurrent_states[0] "
                 f"{ref['cache_info']['recurrent_states_shape']} ({ref['cache_info']['recurrent_states_dtype']}); "
                 "batch dim dropped in the goldens")
    if case["fmt"] == "ssm":
        notes.append(f"reference = HF Mamba2ForCausalLM with vocab padded {V} -> {padded_vocab(case)} "
                     "(padded embedding rows are random weights too); logits and greedy argmax use the first "
                     f"{V} columns only")
    if case["weights_dtype"] != "float32":
        notes.append(f"weights stored in {case['weights_dtype']}; the reference ran in float32 on the "
                     f"{case['weights_dtype']}-rounded weights (every tensor, A_log/dt_bias/D included)")
    meta = OrderedDict([
        ("case", name),
        ("format", case["fmt"]),
        ("weights_files", weights_files),
        ("weights_dtype", case["weights_dtype"]),
        ("seed", seed),
        ("base_seed", BASE_SEED),
        ("seed_offset", seed - BASE_SEED - 1000 * case["index"]),
        ("prompt_len", case["prompt_len"]),
        ("real_vocab", V),
        ("n_layer", L),
        ("n_new", N_NEW),
        ("geometry", geom),
        ("versions", vers),
        ("reference", REFERENCE),
        ("min_greedy_margin", fnum(min(margins), 5)),
        ("min_greedy_margin_cached", fnum(min(ref["margins"]), 5)),
        ("checks", checks),
        ("dt_stats", dt_stats),
        ("tensors", tensors),
        ("notes", notes),
    ])
    write_json(os.path.join(case_dir, "golden.json"), meta)

    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    print(f"[{name}] seed {seed} files {sorted(os.listdir(case_dir))} {size} bytes")
    print(f"    greedy {ref['greedy']}")
    print(f"    min margin {min(margins):.4g} (cached {min(ref['margins']):.4g}); checks {json.dumps(checks)}")
    print(f"    dt {json.dumps(dt_stats)}; cache {json.dumps(ref['cache_info'])}")
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output root (e.g. tests/golden)")
    ap.add_argument("--cases", default="", help="comma-separated subset of case names")
    args = ap.parse_args()

    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hf_logging.set_verbosity_error()

    import importlib.util
    for pkg in ("mamba_ssm", "causal_conv1d", "kernels"):
        if importlib.util.find_spec(pkg) is not None:
            print(f"warning: {pkg} is importable; the torch reference path may not be the one used")

    vers = versions()
    print("versions:", json.dumps(vers))
    wanted = [c for c in args.cases.split(",") if c]
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for case in CASES:
        if wanted and case["name"] not in wanted:
            continue
        total += run_case(case, args.out, vers)
    print(f"total fixture bytes: {total}")

    sums = []
    for root, _dirs, files in os.walk(args.out):
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, args.out)
            if rel in ("SHA256SUMS", "README.md"):
                continue
            with open(p, "rb") as fh:
                sums.append(f"{hashlib.sha256(fh.read()).hexdigest()}  {rel}")
    if not wanted:
        with open(os.path.join(args.out, "SHA256SUMS"), "w") as fh:
            fh.write("\n".join(sorted(sums, key=lambda s: s.split("  ", 1)[1])) + "\n")


if __name__ == "__main__":
    main()
