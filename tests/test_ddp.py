"""Two-process DDP training on CPU (gloo): both ranks take different batches yet end with
identical parameters, and rank 0's checkpoint holds them."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp
from edgeasr.train.checkpoint import latest_checkpoint

from edgeasr.tokenizer import Tokenizer

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist
    from edgeasr.train.config import load_config
    from edgeasr.train.fit import Trainer

    r = Path(root)
    cfg = load_config(CONFIGS / "tiny.toml", [
        f"tokenizer={json.dumps(str(r / 'tok.model'))}",
        f"data.train=[{{manifest={json.dumps(str(r / 'train.jsonl'))}}}]",
        "data.valid=[]", "loop.max_steps=3", "data.max_duration=3.0",
        "data.max_utt_duration=3.0",
    ])
    trainer = Trainer(cfg, r / "exp")
    seen: list[str] = []
    original = trainer.train_step

    def recording_step(batch):  # type: ignore[no-untyped-def]
        seen.extend(batch.ids)
        return original(batch)

    trainer.train_step = recording_step  # type: ignore[method-assign]
    trainer.train()
    torch.save({"params": trainer.model.state_dict(), "seen": seen}, r / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_gloo_identical_parameters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines, texts = [], []
    for i in range(10):
        dur = 0.5 + 0.1 * i
        x = 0.3 * np.sin(2 * np.pi * (100 + 20 * i) * np.arange(int(dur * 16000)) / 16000)
        sf.write(tmp_path / f"u{i}.wav", (x + 0.01 * rng.standard_normal(x.size)).astype(
            np.float32), 16000)
        text = " ".join(rng.choice(WORDS, size=2))
        texts.append(text)
        lines.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": dur})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    Tokenizer.train([*texts, *WORDS] * 3, tmp_path / "tok", vocab_size=30)

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                       start_method="spawn")

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["seen"] and r1["seen"] and not set(r0["seen"]) & set(r1["seen"][:2])
    assert set(r0["seen"][:2]) != set(r1["seen"][:2])  # different data per rank
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    saved = torch.load(latest_checkpoint(tmp_path / "exp"), weights_only=True)
    assert saved["world_size"] == 2 and saved["step"] == 3
    for k, v in saved["model"].items():
        assert torch.equal(v, r0["params"][k]), k
    log = [json.loads(x) for x in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3]
