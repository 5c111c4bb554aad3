"""Prompt formats: how a prepared row becomes training text and a generation prompt.

Three formats, chosen per experiment (``experiments.finetune[].format``):

``special_tokens``  ``<START_Q>{prompt}<END_Q><START_A>{completion}<END_A>`` as in study A; the four
                    markers are added to the tokenizer and ``<END_A>`` ends generation.
``instruction``     Alpaca-style sections (``### Instruction:`` / ``### Input:`` / ``### Response:``)
                    holding the task's instruction; the tokenizer's eos ends the response.
``chat``            the tokenizer's own chat template: system = task instruction, user = prompt,
                    assistant = completion.

``render`` returns ``(prompt_text, completion_text)`` whose concatenation is the training text; the
completion part carries the end marker, so a model trained on it learns to stop. ``render_prompt`` is
the text a model continues at evaluation time and equals the ``prompt_text`` of ``render``. Rendered
text may contain the tokenizer's own special tokens (the chat template writes them), so the text is
tokenised without adding a second BOS where the template already writes one.

``task`` is a task name or a :class:`~tunebench.tasks.base.Task`; its ``instruction`` fills the
instruction and chat formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..util.errors import ConfigError

FORMATS = ("special_tokens", "instruction", "chat")
SPECIAL_TOKENS = ("<START_Q>", "<END_Q>", "<START_A>", "<END_A>")
START_Q, END_Q, START_A, END_A = SPECIAL_TOKENS

_INSTRUCTION = "### Instruction:\n"
_INPUT = "\n\n### Input:\n"
_RESPONSE = "\n\n### Response:\n"

# Placeholders that no real text contains; rendering them through a chat template reveals the
# template's fixed pieces around each message, which is what makes ``parse`` work for any template.
_SLOTS = ("\x00system\x00", "\x00user\x00", "\x00assistant\x00")


def _instruction_of(task: Any) -> str:
    if isinstance(task, str):
        from .. import tasks

        task = tasks.get(task)
    return task.instruction


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"prompt format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")


def _eos(fmt: str, tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    if not eos:
        raise ConfigError(
            f"prompt format {fmt!r} ends the response with the tokenizer's eos token, but the tokenizer has none."
        )
    return eos


def _messages(instruction: str, prompt: str, completion: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": prompt}]
    if completion is not None:
        messages.append({"role": "assistant", "content": completion})
    return messages


def _apply_template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or "the model"
        raise ConfigError(
            f"prompt format 'chat' needs a tokenizer with a chat template, and {name} has none; "
            "use format special_tokens or instruction for this model."
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # templates raise their own errors, e.g. when they allow no system turn
        name = getattr(tokenizer, "name_or_path", None) or "the model"
        raise ConfigError(
            f"the chat template of {name} cannot render a system, user and assistant turn ({exc}); "
            "use format special_tokens or instruction for this model."
        ) from None


def _skeleton(tokenizer: Any) -> tuple[str, str, str]:
    """(prompt skeleton, full skeleton, end-of-turn text) of a chat template, from placeholder messages."""
    system, user, assistant = _SLOTS
    prompt = _apply_template(tokenizer, _messages(system, user), generation_prompt=True)
    full = _apply_template(tokenizer, _messages(system, user, assistant), generation_prompt=False)
    return prompt, full, full[full.index(assistant) + len(assistant) :]


def render_prompt(fmt: str, task: Any, row: Mapping[str, Any], tokenizer: Any = None) -> str:
    """The text a model continues to answer ``row`` (everything before the completion)."""
    _check_format(fmt)
    prompt = row["prompt"]
    if fmt == "special_tokens":
        return f"{START_Q}{prompt}{END_Q}{START_A}"
    instruction = _instruction_of(task)
    if fmt == "instruction":
        return f"{_INSTRUCTION}{instruction}{_INPUT}{prompt}{_RESPONSE}"
    return _apply_template(tokenizer, _messages(instruction, prompt), generation_prompt=True)


def render(fmt: str, task: Any, row: Mapping[str, Any], tokenizer: Any = None) -> tuple[str, str]:
    """``(prompt_text, completion_text)``; their concatenation is the training text of ``row``."""
    _check_format(fmt)
    prompt_text = render_prompt(fmt, task, row, tokenizer)
    completion = row["completion"]
    if fmt == "special_tokens":
        return prompt_text, f"{completion}{END_A}"
    if fmt == "instruction":
        return prompt_text, f"{completion}{_eos(fmt, tokenizer)}"
    full = _apply_template(
        tokenizer, _messages(_instruction_of(task), row["prompt"], completion), generation_prompt=False
    )
    if not full.startswith(prompt_text):
        # A template whose generation prompt is not a prefix of the finished conversation cannot be
        # split into a prompt to mask and a completion to learn.
        raise ConfigError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'the model')} does not render the prompt as a "
            "prefix "
            "of the full conversation; use format special_tokens or instruction for this model."
        )
    completion_text = full[len(prompt_text) :]
    if not _skeleton(tokenizer)[2].strip():
        # The template closes the assistant turn with nothing; eos is what teaches the model to stop.
        completion_text += _eos(fmt, tokenizer)
    return prompt_text, completion_text


def _template_regex(skeleton: str) -> re.Pattern:
    pattern = re.escape(skeleton)
    for slot, group in zip(_SLOTS, ("system", "user", "assistant")):
        pattern = pattern.replace(re.escape(slot), f"(?P<{group}>.*?)")
    return re.compile(pattern + r"\Z", re.DOTALL)


def parse(fmt: str, text: str, task: Any, tokenizer: Any = None) -> tuple[str, str | None]:
    """Inverse of :func:`render`: ``(prompt, completion)`` from a full training text.

    A text that stops where the model must continue (the output of :func:`render_prompt`) gives
    ``completion = None``. Text that does not follow the format raises ``ValueError``.
    """
    _check_format(fmt)
    if fmt == "special_tokens":
        match = re.fullmatch(
            rf"{re.escape(START_Q)}(.*?){re.escape(END_Q)}{re.escape(START_A)}(?:(.*){re.escape(END_A)})?",
            text,
            re.DOTALL,
        )
        if not match:
            raise ValueError("text does not follow the special_tokens format <START_Q>…<END_Q><START_A>…<END_A>.")
        return match.group(1), match.group(2)
    instruction = _instruction_of(task)
    if fmt == "instruction":
        head = f"{_INSTRUCTION}{instruction}{_INPUT}"
        if not text.startswith(head) or _RESPONSE not in text:
            raise ValueError("text does not follow the instruction format of this task.")
        prompt, _, rest = text[len(head) :].partition(_RESPONSE)
        if not rest:
            return prompt, None
        eos = _eos(fmt, tokenizer)
        if not rest.endswith(eos):
            raise ValueError("instruction-format text has a response that does not end with the eos token.")
        return prompt, rest[: -len(eos)]
    prompt_skeleton, full_skeleton, end_of_turn = _skeleton(tokenizer)
    eos = _eos(fmt, tokenizer)
    if not end_of_turn.strip() and text.endswith(eos):
        text = text[: -len(eos)]
    for skeleton, has_completion in ((full_skeleton, True), (prompt_skeleton, False)):
        match = _template_regex(skeleton).match(text)
        if match and match.group("system") == instruction:
            return match.group("user"), match.group("assistant") if has_completion else None
    raise ValueError("text does not follow this tokenizer's chat template with the task's instruction.")


def stop_strings(fmt: str, tokenizer: Any) -> list[str]:
    """Strings that end a generated answer in ``fmt`` (the first one found cuts the output)."""
    _check_format(fmt)
    if fmt == "special_tokens":
        return [END_A]
    eos = _eos(fmt, tokenizer)
    if fmt == "instruction":
        return [eos]
    # The template's end-of-turn marker (e.g. <|im_end|>, <|eot_id|>) may differ from eos.
    end_of_turn = _skeleton(tokenizer)[2].strip()
    return [eos] + ([end_of_turn] if end_of_turn and end_of_turn != eos else [])


def added_tokens(fmt: str) -> list[str]:
    """Tokens the format adds to the tokenizer (their embedding rows are new and trained)."""
    _check_format(fmt)
    return list(SPECIAL_TOKENS) if fmt == "special_tokens" else []


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt, as training saw them and generation must see them.

    The tokenizer's own specials (BOS) are added unless the rendered text already starts with BOS,
    as a chat template's output may.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add)["input_ids"]


def export_openai(task: Any, rows: Iterable[Mapping[str, Any]], fmt: str, tokenizer: Any = None) -> list[dict]:
    """Rows in OpenAI's legacy fine-tuning layout: ``{"prompt", "completion"}`` rendered in ``fmt``."""
    out = []
    for row in rows:
        prompt_text, completion_text = render(fmt, task, row, tokenizer)
        out.append({"prompt": prompt_text, "completion": completion_text})
    return out
