"""lm-evaluation-harness 0.4.13 around a trained bench GPT: the model class and a local perplexity task.

`BenchLM` is registered as lm-eval model "bench-lm". Its `loglikelihood_rolling` scores a document
with exactly the windows the LM task trains and evaluates on (`bench_tasks.lm.make_windows`: end-of-
text, then disjoint windows of `context` tokens, each token predicted once), so lm-eval's
bits_per_byte equals the task's own. `evaluate_with_lm_eval` runs a local `loglikelihood_rolling`
task over given texts in-process, offline, without indexing lm-eval's built-in tasks.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from .backbones.gpt import GPT
from .lm import text_logprob
from .text import Tokenizer

TASK_NAME = "bench_lm_text"


@register_model("bench-lm")
class BenchLM(LM):
    """A bench GPT and its tokenizer as an lm-eval model (construct it directly; it has no string args)."""

    def __init__(self, net: GPT, tokenizer: Tokenizer, batch_size: int = 8) -> None:
        super().__init__()
        self.net, self.tok, self.batch_size = net.eval(), tokenizer, batch_size

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-probability (nats) of each request's whole text, with the task's windows."""
        return [text_logprob(self.net, self.tok, request.args[0], self.batch_size) for request in requests]

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log-probability, is greedy) of each continuation after its context, in one window.

        The context is kept to its last tokens so context + continuation fit the model's window.
        """
        out = []
        context = self.net.config.context
        device = next(self.net.parameters()).device
        for request in requests:
            prefix, continuation = request.args
            ids_ctx = [self.tok.eot_id, *self.tok.encode(prefix)]
            ids_cont = self.tok.encode(continuation)
            if not ids_cont:
                out.append((0.0, True))
                continue
            if len(ids_cont) > context:
                raise ValueError(f"continuation of {len(ids_cont)} tokens exceeds the model's context of {context}")
            ids = (ids_ctx + ids_cont)[-(context + 1) :]
            x_1T = torch.tensor([ids[:-1]], device=device)
            logp_TV = self.net(x_1T)[0, -len(ids_cont) :].float().log_softmax(-1)
            target_T = torch.tensor(ids_cont, device=device)
            logp = float(logp_TV.gather(-1, target_T[:, None]).sum())
            out.append((logp, bool((logp_TV.argmax(-1) == target_T).all())))
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "bench-lm scores text (loglikelihood, loglikelihood_rolling); it does not generate. Use "
            "perplexity or multiple-choice tasks, or decode with the GPT's KV cache directly."
        )


@contextlib.contextmanager
def offline_hf() -> Iterator[None]:
    """Hugging Face libraries offline with a throwaway HF_HOME (unless one is set) for the duration."""
    saved = {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME")}
    with tempfile.TemporaryDirectory(prefix="bench-hf-") as home:
        os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=saved["HF_HOME"] or home)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def perplexity_task(texts: list[str]) -> dict[str, Any]:
    """A local lm-eval task scoring each of `texts` as one document (its default metrics: word and
    byte perplexity, bits per byte)."""

    def load(**_: Any) -> dict[str, Any]:
        import datasets

        return {"test": datasets.Dataset.from_dict({"text": list(texts)})}

    return {
        "task": TASK_NAME,
        "custom_dataset": load,
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
    }


def evaluate_with_lm_eval(model: GPT, tokenizer: Tokenizer, texts: list[str], batch_size: int = 8) -> dict[str, float]:
    """lm-eval's word_perplexity, byte_perplexity and bits_per_byte of `model` on `texts`, in-process."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with offline_hf(), tempfile.TemporaryDirectory(prefix="bench-lm-eval-") as include:
        manager = TaskManager(include_path=include, include_defaults=False)
        results = lm_eval.simple_evaluate(
            model=BenchLM(model, tokenizer, batch_size),
            tasks=[perplexity_task(texts)],
            task_manager=manager,
            bootstrap_iters=0,
            log_samples=False,
        )
    if results is None:
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    metrics = results["results"][TASK_NAME]
    return {name: float(metrics[f"{name},none"]) for name in ("word_perplexity", "byte_perplexity", "bits_per_byte")}
