"""How far the teacher cache's top-k KL is from the exact KL, per k (docs/teacher_cache.md).

    python bench/topk_kl_error.py --tiny
    python bench/topk_kl_error.py --model ~/.cache/airoad/real-qwen2.5-0.5b \
        --adapters outputs/real_probe_fast_kl --data /tmp/gsm8k_dev_chatml.jsonl --n 8

Teacher = the base (adapters disabled), student = base + adapters, on the trained positions of
the first --n examples. For each k: the top-k KL as a fraction of the exact KL (it is a lower
bound), and the relative error of its gradient w.r.t. the student logits,
|| q_k - p_teacher || / || softmax(student) - p_teacher ||, where q_k is the target the cached
teacher gives (top-k probabilities exact, the tail spread like the student's own tail).
--tiny runs the same measure on an in-process random 2-layer model (no files needed), whose
near-uniform distributions are the worst case for top-k.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from airoad.core.kernels.head_loss import TopKTeacher

KS = (8, 16, 32, 64, 128, 256)


def measure(s_logits: torch.Tensor, t_logits: torch.Tensor, ks=KS, tau: float = 1.0) -> list[dict]:
    """s_logits, t_logits: [N, V] student and teacher logits at the same positions."""
    s_logp = torch.log_softmax(s_logits.float() / tau, -1)
    t_logp = torch.log_softmax(t_logits.float() / tau, -1)
    exact = float((t_logp.exp() * (t_logp - s_logp)).sum())
    exact_grad = s_logp.exp() - t_logp.exp()
    rows = []
    for k in ks:
        vals, idx = t_logp.topk(k, dim=-1)
        teacher = TopKTeacher(idx, vals)
        approx = float(teacher.kl(s_logp, 0, s_logp.shape[0]))
        q = teacher.target(s_logp, 0, s_logp.shape[0])
        grad_err = float((q - t_logp.exp()).norm() / exact_grad.norm())
        tail = float(teacher.tail.mean())
        rows.append(
            {
                "k": k,
                "exact": exact,
                "topk": approx,
                "ratio": approx / exact,
                "grad_rel_err": grad_err,
                "tail": tail,
            }
        )
    return rows


def tiny() -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    teacher = Qwen2ForCausalLM(cfg).eval()
    student = Qwen2ForCausalLM(cfg).eval()
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))  # a "tuned" model a small step from its base
        ids = torch.randint(0, cfg.vocab_size, (4, 64))
        return student(ids).logits.flatten(0, 1), teacher(ids).logits.flatten(0, 1)


def real(model: Path, adapters: Path, data: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from airoad.core.data.chat_data import IGNORE, LoadStats, load_conversations
    from airoad.core.model.lean_load import load_widened
    from airoad.sft.data import tokenize_all

    tok = AutoTokenizer.from_pretrained(model)
    convs, _ = load_conversations(str(data), None)
    examples = tokenize_all(tok, convs[:n], 512, LoadStats())
    base = load_widened(AutoModelForCausalLM, str(model), torch.float32, use_safetensors=True)
    peft = PeftModel.from_pretrained(base, str(adapters)).eval()
    s_parts, t_parts = [], []
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            keep = torch.tensor(ex.labels[1:] + [IGNORE]) != IGNORE
            s_parts.append(peft(ids).logits[0][keep])
            with peft.disable_adapter():
                t_parts.append(peft(ids).logits[0][keep])
    return torch.cat(s_parts), torch.cat(t_parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="random in-process model instead of --model")
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/airoad/real-qwen2.5-0.5b")
    ap.add_argument("--adapters", type=Path, help="a trained adapter directory (the student)")
    ap.add_argument("--data", type=Path, help="ChatML/Alpaca JSONL; its trained positions are measured")
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args()
    if not a.tiny and (a.adapters is None or a.data is None):
        ap.error("--adapters and --data are needed unless --tiny")
    s, t = tiny() if a.tiny else real(a.model, a.adapters, a.data, a.n)
    print(
        f"{s.shape[0]} positions, vocab {s.shape[1]}, exact KL {measure(s, t, ks=(1,))[0]['exact'] / s.shape[0]:.4f} nats/token"
    )
    print("| k | top-k KL / exact KL | gradient rel. error | mean teacher tail mass |")
    print("|---|---|---|---|")
    for r in measure(s, t):
        print(f"| {r['k']} | {r['ratio']:.4f} | {r['grad_rel_err']:.4f} | {r['tail']:.4f} |")


if __name__ == "__main__":
    main()
