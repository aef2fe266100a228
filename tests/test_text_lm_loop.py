"""The training loop shared by ``edgeasr-train lm`` and ``edgeasr-train mlm``
(train/text_lm_loop.py): schedule, time limit, resume, and both commands end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from edgeasr.train.cli import main as train_cli
from edgeasr.train.text_lm_loop import TextLMTrainConfig, batch_tokens, train_text_lm

from edgeasr.tokenizer import Tokenizer

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song",
             "she reads a book every night", "", "we went to the market on sunday"]


def _toy() -> tuple[torch.nn.Module, object]:
    """A linear "LM" and its batch loss: enough to drive the loop without a real model."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def batch_loss(seqs: list[list[int]]) -> tuple[torch.Tensor, int]:
        x = torch.tensor([[float(s[0])] * 4 for s in seqs])
        return model(x).pow(2).sum(), len(seqs)

    return model, batch_loss


def test_schedule_warms_up_then_decays_to_a_tenth() -> None:
    cfg = TextLMTrainConfig(steps=100, lr=1.0, warmup=10)
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(10) == pytest.approx(1.0) and cfg.lr_at(100) == pytest.approx(0.1)
    assert all(cfg.lr_at(s) >= cfg.lr_at(s + 1) for s in range(10, 100))


def test_batch_tokens_pads_and_rejects_empty_sentences() -> None:
    tokens, lengths = batch_tokens([[3, 4, 5], [6]], pad_id=9)
    assert tokens.tolist() == [[3, 4, 5], [6, 9, 9]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="non-empty"):
        batch_tokens([[3], []])


def test_time_limit_stops_right_after_the_evaluation_that_used_it_up() -> None:
    """The limit is checked again after an evaluation (which can take minutes): no step is
    trained past it, and the last step done is the one evaluated and checkpointed."""
    model, batch_loss = _toy()
    seen: list[int] = []

    def slow_eval() -> float:
        time.sleep(0.6)
        return 1.0

    cfg = TextLMTrainConfig(steps=50, batch_size=2, warmup=1, eval_every=1,
                            max_minutes=0.5 / 60)
    step, metrics = train_text_lm(model, [[1], [2]], cfg, batch_loss, slow_eval,
                                  lambda s, m, opt: seen.append(s))
    assert (step, metrics, seen) == (1, 1.0, [1])
    assert not model.training


def test_resume_restores_the_optimizer_and_nothing_left_returns_none() -> None:
    model, batch_loss = _toy()
    states: list[dict] = []
    cfg = TextLMTrainConfig(steps=6, batch_size=2, warmup=1, eval_every=3)
    step, _ = train_text_lm(model, [[1], [2], [3]], cfg, batch_loss, lambda: 0.0,
                            lambda s, m, opt: states.append(opt.state_dict()))
    assert step == 6 and len(states) == 2
    assert states[-1]["state"][0]["step"] == 6  # AdamW's own step count travels with it
    # a finished run resumed: the optimizer state loads, no step is done, no evaluation
    assert train_text_lm(model, [[1]], cfg, batch_loss, lambda: 0.0, None, states[-1], 6) == (
        6, None)
    with pytest.raises(ValueError, match="no training sentences"):
        train_text_lm(model, [], cfg, batch_loss, lambda: 0.0)


@pytest.mark.parametrize("command", ["lm", "mlm"])
def test_command_trains_logs_checkpoints_and_resumes(command: str, tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("\n".join(SENTENCES * 4) + "\n")
    (text / "dev.txt").write_text("\n".join(SENTENCES[:3]) + "\n")
    Tokenizer.train([s for s in SENTENCES if s] * 4, tmp_path / "tok", 40)
    out = tmp_path / command
    args = [command, "--text-dir", str(text), "--out", str(out), "--tokenizer",
            str(tmp_path / "tok.model"), "--dim", "16", "--layers", "1", "--heads", "2",
            "--max-seq-len", "16", "--batch-size", "4", "--warmup", "2", "--eval-every", "2"]
    threads = torch.get_num_threads()  # the command sets it (--threads, default 1)
    try:
        assert train_cli([*args, "--steps", "4"]) == 0
        assert train_cli([*args, "--steps", "6", "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 4, 6]
    assert all("minutes" in r for r in logs)
    assert ("dev_ppl" in logs[-1]) if command == "lm" else {"acc15", "acc1"} <= set(logs[-1])
    state = torch.load(out / f"{command}.pt", weights_only=True)
    assert state["format"] == {"lm": "edgeasr-llama", "mlm": "edgeasr-bert"}[command]
    assert state["step"] == 6 and "optimizer" in state
