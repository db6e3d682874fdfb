"""Train the toy tokenizer and model ladder on CPU: ``python -m budget_sampler.toy.train``.

    python -m budget_sampler.toy.train                      # tokenizer + all four models, into weights/
    python -m budget_sampler.toy.train --models toy-xs --out /tmp/ladder --steps-scale 0.1

Deterministic by seed for a given thread count (``--threads``, default 1): the training stream
(problems, tokenization, packing) and initialisation depend only on ``--seed``, and each model
trains for a fixed number of steps. ``--minutes`` caps the wall time per model instead (the cosine
schedule is then laid out over the number of steps that fits, estimated from the first steps,
which makes the run depend on the machine's speed).

Training sequences are ``<s> prompt solution </s>``, with prompt and solution tokenized
*separately*, exactly as inference sees them (inference tokenizes the prompt alone). Sequences are
packed whole into rows of ``--seq-len`` tokens. The loss weights solution tokens 1 and prompt
tokens ``--prompt-weight``. Each model is saved as soon as it is done (smallest first).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import sys
import time

from .ladder import ARCH, NAMES, WEIGHTS_DIR
from .tasks import iter_train_problems

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

# Default steps per model (batch 16 x 256 tokens, 9.8M token slots, ~60k problems, no row seen
# twice): about 80 minutes on this 2-core machine as two one-thread processes (toy-l alone; the
# three others in turn), see README.md. 600 steps left toy-l at greedy pass@1 0.17.
DEFAULT_STEPS = {"toy-xs": 2400, "toy-s": 2400, "toy-m": 2400, "toy-l": 2400}
DEFAULT_LR = {"toy-xs": 3e-3, "toy-s": 3e-3, "toy-m": 2.5e-3, "toy-l": 2e-3}


def train_tokenizer(out_dir: pathlib.Path, seed: int, vocab_size: int = 1024,
                    n_problems: int = 20000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    stream = iter_train_problems(seed=seed + 1000)  # a corpus disjoint from the eval split
    corpus = []
    for _ in range(n_problems):
        p = next(stream)
        corpus.append(p["prompt"])
        corpus.append(p["canonical_solution"])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def save_tokenizer(tok, out_dir: pathlib.Path):
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=None, model_max_length=512,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(out_dir))
    # name the class both transformers 4.x and 5.x know (5.x writes its new "TokenizersBackend")
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return fast


def build_rows(tok, n_rows: int, seq_len: int, seed: int, prompt_weight: float):
    """Pack whole ``<s> prompt solution </s>`` sequences into ``n_rows`` rows of ``seq_len``."""
    import torch

    bos, eos, pad = tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)
    stream = iter_train_problems(seed=seed)
    # A row is final once 8 newer rows are open (the pool below holds 8), so building 8 extra
    # rows and dropping them makes rows[:k] the same for every n_rows >= k.
    wanted, n_rows = n_rows, n_rows + 8
    ids = torch.full((n_rows, seq_len), pad, dtype=torch.long)
    w = torch.zeros((n_rows, seq_len), dtype=torch.float32)     # loss weight of predicting it
    sol = torch.zeros((n_rows, seq_len), dtype=torch.bool)
    # first-fit packing over a few open rows (deterministic)
    open_rows: list = []      # [row index, next free column]
    next_row = 0
    pending: list = []
    while True:
        if not pending:
            batch = [next(stream) for _ in range(512)]
            pe = tok.encode_batch([p["prompt"] for p in batch], add_special_tokens=False)
            se = tok.encode_batch([p["canonical_solution"] for p in batch],
                                  add_special_tokens=False)
            pending = [(a.ids, b.ids) for a, b in zip(pe, se)][::-1]
        p_ids, s_ids = pending.pop()
        seq = [bos] + p_ids + s_ids + [eos]
        if len(seq) > seq_len:
            continue
        slot = next((o for o in open_rows if o[1] + len(seq) <= seq_len), None)
        if slot is None:
            if next_row >= n_rows:
                break
            slot = [next_row, 0]
            next_row += 1
            open_rows.append(slot)
            if len(open_rows) > 8:
                open_rows.pop(0)
        row, col = slot
        n_p = 1 + len(p_ids)
        ids[row, col:col + len(seq)] = torch.tensor(seq)
        w[row, col + 1:col + n_p] = prompt_weight      # predicting prompt tokens (not BOS)
        w[row, col + n_p:col + len(seq)] = 1.0           # predicting solution tokens and EOS
        sol[row, col + n_p:col + len(seq)] = True
        slot[1] = col + len(seq)
        if seq_len - slot[1] < 12:
            open_rows.remove(slot)
    return ids[:wanted], w[:wanted], sol[:wanted]


def make_config(name: str, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=tok.get_vocab_size(), max_position_embeddings=512, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False, hidden_act="silu",
        bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD), attention_bias=False, mlp_bias=False,
        initializer_range=0.02, **ARCH[name])


def train_model(name, tok, rows, args, out_root: pathlib.Path, log):
    import torch
    from tqdm import tqdm
    from transformers import GenerationConfig, LlamaForCausalLM

    ids, w, sol = rows
    torch.manual_seed(args.seed)
    config = make_config(name, tok)
    model = LlamaForCausalLM(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    steps = max(1, int(round(DEFAULT_STEPS[name] * args.steps_scale)))
    if args.steps:
        steps = args.steps
    lr = DEFAULT_LR[name] * args.lr_scale
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = min(100, max(1, steps // 10))

    def lr_at(step, total):
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    # each model reads the first steps x batch rows of the shared stream, in its own shuffled
    # order, so its weights do not depend on which other models are trained in the same run
    bsz = args.batch_size
    n_rows = min(ids.shape[0], steps * bsz)
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(n_rows, generator=g)
    log(f"[{name}] {n_params:,} parameters, {steps} steps x {bsz} x {ids.shape[1]} tokens, "
        f"lr {lr:g}, {n_rows} rows of data")
    t0 = time.time()
    deadline = t0 + args.minutes * 60 if args.minutes else None
    total = steps
    ema = None
    bar = tqdm(range(steps), desc=name, file=sys.stderr, mininterval=2.0,
               disable=args.no_progress)
    history = []
    done = 0
    for step in bar:
        if deadline is not None:
            if step == 20:   # lay the schedule out over the steps that fit in the time
                per = (time.time() - t0) / 20
                total = max(21, min(steps, int(args.minutes * 60 / per)))
            if step >= total or time.time() > deadline:
                break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total)
        start = (step * bsz) % n_rows
        idx = order[start:start + bsz]
        if idx.numel() < bsz:
            idx = torch.cat([idx, order[:bsz - idx.numel()]])
        x, wt, sm = ids[idx], w[idx], sol[idx]
        logits = model(input_ids=x).logits[:, :-1].float()
        tgt, wt, sm = x[:, 1:], wt[:, 1:], sm[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               tgt.reshape(-1), reduction="none").view_as(wt)
        loss = (ce * wt).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done += 1
        sol_loss = float((ce.detach() * sm).sum() / sm.sum().clamp(min=1))
        ema = sol_loss if ema is None else 0.98 * ema + 0.02 * sol_loss
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", sol=f"{ema:.3f}")
        if step % args.log_every == 0 or step == steps - 1:
            el = time.time() - t0
            rec = dict(step=step, loss=round(loss.item(), 4), solution_loss=round(sol_loss, 4),
                       solution_loss_ema=round(ema, 4), lr=round(lr_at(step, total), 6),
                       seconds=round(el, 1),
                       tokens_per_s=round((step + 1) * bsz * ids.shape[1] / max(el, 1e-9)))
            history.append(rec)
            log(f"[{name}] " + json.dumps(rec))
    bar.close()
    el = time.time() - t0
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id).save_pretrained(str(out))
    save_tokenizer(tok, out)
    summary = dict(name=name, parameters=n_params, steps=done, batch_size=bsz,
                   seq_len=int(ids.shape[1]), tokens=done * bsz * int(ids.shape[1]),
                   seconds=round(el, 1), tokens_per_s=round(done * bsz * ids.shape[1] / el),
                   final_solution_loss_ema=round(ema, 4), lr=lr, seed=args.seed,
                   threads=args.threads)
    (out / "training.json").write_text(json.dumps(dict(summary=summary, log=history),
                                                  indent=1) + "\n")
    log(f"[{name}] saved to {out} " + json.dumps(summary))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m budget_sampler.toy.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(WEIGHTS_DIR), help="output folder (default: shipped)")
    ap.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-time cap per model (not deterministic across machines)")
    ap.add_argument("--steps", type=int, default=None, help="steps for every model")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale the default steps")
    ap.add_argument("--lr-scale", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--prompt-weight", type=float, default=0.25)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--tokenizer-problems", type=int, default=20000,
                    help="training problems the tokenizer is trained on")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: two-thread torch collapses when the cores are shared)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--log-file", default=None, help="also append the log here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(args.seed)
    out_root = pathlib.Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    log_path = pathlib.Path(args.log_file) if args.log_file else None

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, file=sys.stderr, flush=True)
        if log_path:
            with log_path.open("a") as f:
                f.write(line + "\n")

    t = time.time()
    tok = train_tokenizer(out_root, args.seed, vocab_size=args.vocab_size,
                          n_problems=args.tokenizer_problems)
    log(f"tokenizer: vocab {tok.get_vocab_size()} trained in {time.time() - t:.1f}s")
    max_steps = max((args.steps or int(round(DEFAULT_STEPS[m] * args.steps_scale)))
                    for m in args.models)
    n_rows = max(args.batch_size, min(max_steps * args.batch_size, 40000))
    t = time.time()
    rows = build_rows(tok, n_rows, args.seq_len, args.seed, args.prompt_weight)
    fill = float((rows[0] != tok.token_to_id(PAD)).float().mean())
    log(f"data: {n_rows} rows x {args.seq_len} tokens ({fill:.0%} filled) "
        f"in {time.time() - t:.1f}s")
    summaries = []
    for name in args.models:   # smallest first; each saved as soon as it is done
        summaries.append(train_model(name, tok, rows, args, out_root, log))
    log("done: " + json.dumps(summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
