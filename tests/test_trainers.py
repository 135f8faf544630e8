"""Every export format loaded by the libraries trainers use: `datasets.load_dataset("json")`, and TRL's own data
preparation (chat templating and tokenising in SFTTrainer, DPOTrainer and KTOTrainer, `apply_chat_template`,
`unpair_preference_dataset`) with a tokenizer and a tiny model built here (no hub download).

Needs the trainer libraries: `pip install '.[test,trainers]'`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import sim_job, write_job
from gen.cli import cli
from gen.simulator import SimConfig, Simulator

datasets = pytest.importorskip("datasets", reason="the trainer libraries: pip install '.[test,trainers]'")
trl = pytest.importorskip("trl", reason="the trainer libraries: pip install '.[test,trainers]'")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SYSTEM = "You answer briefly."
FORMATS = {  # format -> the columns a trainer reads
    "messages": ["messages"], "sharegpt": ["conversations"], "alpaca": ["instruction", "input", "output", "system"],
    "text": ["text"], "dpo-trl": ["prompt", "chosen", "rejected"], "dpo-axolotl": ["messages", "chosen", "rejected"],
    "dpo-chatml-intel": ["system", "question", "chosen", "rejected"], "kto": ["prompt", "completion", "label"],
}
PAIR_FORMATS = {"dpo-trl", "dpo-axolotl", "dpo-chatml-intel", "kto"}

# ChatML that refuses any role but system/user/assistant, and marks assistant turns for assistant-only loss.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + m['role']) }}"
    "{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def gen(db: str, *args: str):
    result = CliRunner().invoke(cli, ["--db", db, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A respond job (4 single-turn conversations with a system prompt) and a dpo_reroll job on it, exported in
    every format (text: every template)."""
    from test_dpo import dpo_job

    folder = tmp_path_factory.mktemp("exports")
    db = f"sqlite:///{folder / 'gen.db'}"
    with Simulator(SimConfig(latency=0.0, seed=5)) as sim:
        src = sim_job(sim.base_url, name="src", prompts=4).replace("  prompts:\n", f"  system: {SYSTEM}\n  prompts:\n")
        gen(db, "run", str(write_job(folder / "src.yml", src)), "-q")
        gen(db, "run", str(dpo_job(folder / "pairs.yml", sim.base_url, "  source_job: src\n")), "-q")
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = folder / f"{fmt}.jsonl"
        extra = ["--all-templates"] if fmt == "text" else []
        gen(db, "export", "pairs" if fmt in PAIR_FORMATS else "src", "-o", str(paths[fmt]), "--format", fmt, *extra)
    return paths


def load(path: Path):
    return datasets.load_dataset("json", data_files=str(path), split="train")


@pytest.fixture(scope="module")
def tokenizer(exported):
    """A word-level tokenizer trained on the exported texts, wrapped as a transformers tokenizer with ChatML."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["system user assistant"]
    for path in exported.values():
        corpus += [line for line in path.read_text(encoding="utf-8").splitlines()]
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=["<unk>", "<pad>", "<s>", "<|im_start|>", "<|im_end|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))


def on_cpu(tmp_path) -> dict:
    """Trainer arguments for a CPU-only machine with no logging service."""
    return {"output_dir": str(tmp_path), "report_to": "none", "use_cpu": True, "bf16": False, "max_length": None,
            "dataset_num_proc": None}


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_every_format_loads_with_datasets_and_has_exactly_its_columns(exported):
    for fmt, columns in FORMATS.items():
        ds = load(exported[fmt])
        assert sorted(ds.column_names) == sorted(columns), fmt
        expected = {"text": 4 * 5, "kto": 2 * 4}.get(fmt, 4)  # text: every record in each of the 5 templates
        assert ds.num_rows == expected, fmt
    assert set(load(exported["alpaca"])["system"]) == {SYSTEM}
    assert set(load(exported["kto"])["label"]) == {True, False}


def test_trl_applies_the_chat_template_to_every_conversational_format(exported, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    messages = load(exported["messages"])[0]
    assert is_conversational(messages)
    text = maybe_apply_chat_template(messages, tokenizer)["text"]
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")
    pair = maybe_apply_chat_template(load(exported["dpo-trl"])[0], tokenizer)
    assert pair["prompt"].endswith("<|im_start|>assistant\n")
    raw = load(exported["dpo-trl"])[0]
    assert pair["chosen"] == raw["chosen"][0]["content"] + "<|im_end|>\n"
    assert pair["rejected"] == raw["rejected"][0]["content"] + "<|im_end|>\n"
    kto = maybe_apply_chat_template(load(exported["kto"])[0], tokenizer)
    assert set(kto) == {"prompt", "completion", "label"} and kto["completion"].endswith("<|im_end|>\n")


def test_trl_sft_tokenises_messages_with_assistant_only_loss(exported, tokenizer, tmp_path):
    from trl import SFTConfig, SFTTrainer

    raw = load(exported["messages"])
    trainer = SFTTrainer(model=tiny_model(tokenizer), processing_class=tokenizer, train_dataset=raw,
                         args=SFTConfig(**on_cpu(tmp_path), assistant_only_loss=True))
    prepared = trainer.train_dataset
    assert prepared.num_rows == raw.num_rows
    for row, source in zip(prepared, raw):
        trained = [t for t in row["labels"] if t != -100]  # TRL's labels: -100 outside the assistant's turns
        answer = source["messages"][-1]["content"]
        assert trained == ids(tokenizer, answer) + [tokenizer.eos_token_id]  # the answer and <|im_end|>, nothing else


def test_trl_sft_tokenises_text_rows_in_every_template(exported, tokenizer, tmp_path):
    from trl import SFTConfig, SFTTrainer

    raw = load(exported["text"])
    trainer = SFTTrainer(model=tiny_model(tokenizer), processing_class=tokenizer, train_dataset=raw,
                         args=SFTConfig(**on_cpu(tmp_path), dataset_text_field="text"))
    prepared = trainer.train_dataset
    assert prepared.num_rows == raw.num_rows == 20
    for row, source in zip(prepared, raw):
        # TRL appends EOS to completion-style text, unless it ends with it already (chatml)
        eos = [] if source["text"].endswith(tokenizer.eos_token) else [tokenizer.eos_token_id]
        assert row["input_ids"] == ids(tokenizer, source["text"]) + eos


def test_trl_dpo_tokenises_prompt_chosen_and_rejected(exported, tokenizer, tmp_path):
    from trl import DPOConfig, DPOTrainer

    raw = load(exported["dpo-trl"])
    trainer = DPOTrainer(model=tiny_model(tokenizer), ref_model=tiny_model(tokenizer), processing_class=tokenizer,
                         train_dataset=raw,
                         args=DPOConfig(**on_cpu(tmp_path)))
    prepared = trainer.train_dataset
    assert prepared.num_rows == raw.num_rows == 4
    for row, source in zip(prepared, raw):
        end = [tokenizer.eos_token_id]  # <|im_end|>
        assert row["chosen_ids"] == ids(tokenizer, source["chosen"][0]["content"]) + end
        assert row["rejected_ids"] == ids(tokenizer, source["rejected"][0]["content"]) + end
        assert row["prompt_ids"][-2:] == ids(tokenizer, "<|im_start|>assistant")


def test_trl_kto_tokenises_the_kto_export_which_matches_trls_own_unpairing_of_the_dpo_export(exported, tokenizer,
                                                                                            tmp_path):
    from trl import KTOConfig, KTOTrainer
    from trl.data_utils import unpair_preference_dataset

    raw = load(exported["kto"])
    unpaired = unpair_preference_dataset(load(exported["dpo-trl"]))

    def rows(ds):
        return sorted(json.dumps({k: r[k] for k in ("prompt", "completion", "label")}, sort_keys=True) for r in ds)

    assert rows(raw) == rows(unpaired)
    trainer = KTOTrainer(model=tiny_model(tokenizer), ref_model=tiny_model(tokenizer), processing_class=tokenizer,
                         train_dataset=raw,
                         args=KTOConfig(**on_cpu(tmp_path), per_device_train_batch_size=2))
    prepared = trainer.train_dataset
    assert prepared.num_rows == raw.num_rows == 8
    for row, source in zip(prepared, raw):
        assert row["completion_ids"] == ids(tokenizer, source["completion"][0]["content"]) + [tokenizer.eos_token_id]
        assert row["label"] == source["label"]
