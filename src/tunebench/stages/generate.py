"""Batched greedy decoding whose output does not depend on the batch size.

Each prompt is first read on its own, in fixed chunks of :data:`PREFILL_CHUNK` tokens, with a
key/value cache; chunks that several prompts share verbatim (the instructions and worked examples
of a few-shot baseline) are computed once and reused. The prompts' caches are then left-padded
into batches (longest prompts first) and decoded together, greedily; a row leaves its batch as
soon as it meets an end token, a stop string or the token limit. Results come back in input order.

Why not ``model.generate``: in a padded batch two things change a row's floating-point result, so
a near-tie between two tokens can flip and one prompt can get another answer at another batch
size (or next to other prompts):

* attention over a padded key range sums over more (masked) positions, which regroups the
  additions of the softmax and of the weighted sum of values; here each row attends only over its
  own keys, with exactly the shapes it would have alone;
* a matrix product's row result depends on how many rows the BLAS library is given (MKL takes
  other kernels below a thread-dependent row count: 1-3, 5-7 and 9-11 rows on two threads); every
  linear layer's input is padded to a row multiple measured on this machine to be invariant
  (4 with MKL on x86).

Reading a prompt in fixed chunks makes its cache a function of its own tokens only, whatever else
is evaluated with it. With these measures a row's logits are bitwise the same at every batch size
and thread count measured here, so near-ties break the same way (the tests engineer near-ties to
check it). The row multiple is probed on one square matrix; a BLAS library (or GPU) whose kernel
choice also depends on other shapes may still differ, and where no multiple passes the probe
(:func:`row_multiple` returns None) decoding works but a warning says invariance is not guaranteed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache, DynamicCache
from transformers.cache_utils import DynamicLayer

from ..util.errors import UserError

log = logging.getLogger(__name__)

ATTENTION = "tunebench_rowwise"
#: Tokens read per forward pass while reading a prompt; also the unit in which prompts share work.
PREFILL_CHUNK = 64
_ROW_MULTIPLES = (4, 8, 16, 32)


@dataclass
class Generation:
    """One decoded continuation."""

    text: str  # the continuation, without the end token or stop string that ended it
    prompt_tokens: int
    generated_tokens: int  # decoding steps, the end token included
    stopped: str  # "end_token", "stop_string" or "length"


@dataclass
class Throughput:
    wall_time_s: float
    prompt_tokens: int
    prompt_tokens_computed: int  # prompt tokens actually run through the model (shared chunks once)
    generated_tokens: int
    batch_size: int = 0  # the batch size that ran (lower than asked after running out of memory)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0


def _rowwise_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, row_starts=None, **kwargs):
    """Causal attention computed row by row over each row's own keys.

    ``row_starts[b]`` is the index of row b's first real key; keys before it are left padding.
    Every query is a real token, the last ``q_len`` of its row: prompts are read one at a time and
    decoding adds one token per row.
    """
    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    out = query.new_empty(batch, q_len, heads, head_dim)
    for b in range(batch):
        start = 0 if row_starts is None else int(row_starts[b])
        k = key[b : b + 1, :, start:]
        v = value[b : b + 1, :, start:]
        if q_len == 1:
            # One query attends to every key: fold the query heads that share a key head into the
            # query axis instead of copying the cache once per head.
            o = F.scaled_dot_product_attention(
                query[b : b + 1].reshape(1, kv_heads, groups, head_dim), k, v, scale=scaling
            )
            out[b] = o.reshape(heads, 1, head_dim).transpose(0, 1)
            continue
        n_keys = k.shape[2]
        mask = None
        if q_len < n_keys:  # a chunk continuing a cached prefix: causal, aligned to the last key
            mask = torch.ones(q_len, n_keys, dtype=torch.bool, device=query.device).tril(n_keys - q_len)
        o = F.scaled_dot_product_attention(
            query[b : b + 1], k, v, attn_mask=mask, is_causal=mask is None, scale=scaling, enable_gqa=groups > 1
        )
        out[b] = o[0].transpose(0, 1)
    return out, None


AttentionInterface.register(ATTENTION, _rowwise_attention)

_multiple_cache: dict[tuple, int | None] = {}


def row_multiple(dim: int, dtype: torch.dtype, device: torch.device) -> int | None:
    """Smallest row-count multiple at which a linear layer's output rows do not depend on the row count."""
    key = (dim, dtype, str(device), torch.get_num_threads())
    if key not in _multiple_cache:
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(dim, dim, generator=gen).to(device=device, dtype=dtype)
        x = torch.randn(512, dim, generator=gen).to(device=device, dtype=dtype)
        reference = F.linear(x, weight)
        found = None
        for multiple in _ROW_MULTIPLES:
            if all(torch.equal(F.linear(x[:m], weight), reference[:m]) for m in range(multiple, 257, multiple)):
                found = multiple
                break
        if found is None:
            log.warning(
                "no row multiple makes matrix products batch-invariant on %s; predictions may depend on the batch size",
                device,
            )
        _multiple_cache[key] = found
    return _multiple_cache[key]


def _underlying(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _device(model) -> torch.device:
    """Where the model's inputs go: the input embedding's execution device.

    A model spread by accelerate may keep its embedding offloaded (on ``meta``, streamed from CPU or
    disk at each call); its hook then names the device the layer runs on.
    """
    embedding = _underlying(model).get_input_embeddings()
    hook = getattr(embedding, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    return embedding.weight.device


@contextmanager
def batch_invariant(model) -> Iterator[None]:
    """Switch ``model`` to row-wise attention and row-padded linear layers for the duration.

    Inside, every forward call must pass ``row_starts`` (each row's first real key index).
    """
    inner = _underlying(model)
    previous = inner.config._attn_implementation
    inner.set_attn_implementation(ATTENTION)
    if inner.config._attn_implementation != ATTENTION:
        # Without row-wise attention the left-padded batch cache would be attended as if it were text.
        raise ValueError(
            f"{type(inner).__name__} cannot switch its attention implementation, which batched decoding needs"
        )
    first = next(model.parameters())
    multiple = row_multiple(inner.config.hidden_size, first.dtype, _device(model))
    handles = []
    if multiple:
        shapes: dict[int, torch.Size] = {}

        def pad(module, args):
            x = args[0]
            rows = x.numel() // x.shape[-1]
            if rows % multiple == 0:
                return None
            shapes[id(module)] = x.shape
            flat = x.reshape(rows, x.shape[-1])
            flat = torch.cat([flat, flat.new_zeros(multiple - rows % multiple, x.shape[-1])])
            return (flat, *args[1:])

        def unpad(module, args, output):
            shape = shapes.pop(id(module), None)
            if shape is None:
                return None
            rows = shape.numel() // shape[-1]
            return output[:rows].reshape(*shape[:-1], output.shape[-1])

        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                handles.append(module.register_forward_pre_hook(pad))
                handles.append(module.register_forward_hook(unpad))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        inner.set_attn_implementation(previous)


def stop_token_ids(tokenizer, model=None, stop_strings: Sequence[str] = ()) -> set[int]:
    """End-of-sequence ids of the tokenizer and the model's generation config, plus the stop strings that
    are one token."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    vocabulary = tokenizer.get_vocab()
    ids.update(vocabulary[text] for text in stop_strings if text in vocabulary)
    return ids


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    hits = [text.find(s) for s in stop_strings if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _cache_from(segments: list[list[tuple[torch.Tensor, torch.Tensor]]], config) -> DynamicCache:
    """A cache holding the concatenation of per-layer (keys, values) segments."""
    cache = DynamicCache(config=config)
    for layer, parts in enumerate(zip(*segments)):
        cache.update(torch.cat([k for k, _ in parts], dim=2), torch.cat([v for _, v in parts], dim=2), layer)
    return cache


class _Prefill:
    """Reads prompts chunk by chunk; chunks that several prompts share are computed once."""

    def __init__(self, model, prompts: Sequence[Sequence[int]]):
        self.model = model
        self.config = _underlying(model).config
        self.device = _device(model)
        # A chunk is worth keeping when at least two prompts begin with the same tokens up to its
        # end (and go on past it, since a prompt's last chunk must run to give the first logits).
        counts = Counter(
            tuple(prompt[:end]) for prompt in prompts for end in range(PREFILL_CHUNK, len(prompt), PREFILL_CHUNK)
        )
        self.shared = {key for key, count in counts.items() if count > 1}
        self.store: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.computed_tokens = 0

    def __call__(self, prompt: Sequence[int]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The logits after the last prompt token and the prompt's per-layer (keys, values)."""
        segments: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        cache = None  # holds every segment so far, unless the last one came from the store
        for begin in range(0, len(prompt), PREFILL_CHUNK):
            end = min(begin + PREFILL_CHUNK, len(prompt))
            key = tuple(prompt[:end]) if end < len(prompt) else None
            if key in self.store:
                segments.append(self.store[key])
                cache = None
                continue
            if cache is None:
                cache = _cache_from(segments, self.config) if segments else DynamicCache(config=self.config)
            logits = self.model(
                input_ids=torch.tensor([prompt[begin:end]], device=self.device),
                position_ids=torch.arange(begin, end, device=self.device).unsqueeze(0),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                row_starts=[0],
            ).logits[0, -1]
            self.computed_tokens += end - begin
            segment = [(layer.keys[:, :, begin:end], layer.values[:, :, begin:end]) for layer in cache.layers]
            if key in self.shared:
                segment = [(k.clone(), v.clone()) for k, v in segment]  # not a view that pins this prompt's cache
                self.store[key] = segment
            segments.append(segment)
        # The last chunk always runs, so the cache holds the whole prompt.
        return logits, [(layer.keys, layer.values) for layer in cache.layers]


class _PreallocatedLayer(DynamicLayer):
    """A cache layer with room for every token a batch will hold.

    Appending writes in place; the default layer concatenates, which copies the whole cache at
    every decoding step (a third of the step time at a few hundred tokens).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._keys, self._values, self._length = keys, values, length
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        indices = indices.to(self._keys.device)  # layers of a spread model live on several devices
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()


def _batch_cache(prompts, prefill, width: int, capacity: int) -> tuple[list[torch.Tensor], Cache]:
    """The first logits of every prompt and one cache for the batch, every row right-aligned in ``width`` positions.

    Each prompt's own cache is copied into the batch cache as soon as it is read and then dropped, so
    at most one prompt cache lives beside the batch cache: keeping them all until the batch cache is
    built doubles the peak (a 7B 8-shot GSM8K batch of 16 at ≈1.45k tokens holds ≈12 GiB of cache).
    Each layer's batch cache lives on that layer's device (a model spread over GPUs keeps its own).
    """
    first_logits, batch_keys, batch_values = [], [], []
    for row, prompt in enumerate(prompts):
        logits, cache = prefill(prompt)
        first_logits.append(logits)
        for layer, (k, v) in enumerate(cache):
            if row == 0:
                shape = (len(prompts), k.shape[1], capacity, k.shape[3])
                batch_keys.append(k.new_zeros(shape))
                batch_values.append(v.new_zeros(shape))
            batch_keys[layer][row, :, width - k.shape[2] : width] = k[0]
            batch_values[layer][row, :, width - v.shape[2] : width] = v[0]
        del cache
    layers = [_PreallocatedLayer(k, v, width) for k, v in zip(batch_keys, batch_values)]
    return first_logits, Cache(layers=layers)


def _decode_batch(model, tokenizer, prompts, prefill, max_new_tokens, stop_ids, stop_strings) -> list[Generation]:
    device = _device(model)
    width = max(len(p) for p in prompts)
    first_logits, cache = _batch_cache(prompts, prefill, width, width + max_new_tokens)
    starts = [width - len(p) for p in prompts]
    active = list(range(len(prompts)))  # rows still decoding, in cache order
    generated: list[list[int]] = [[] for _ in prompts]
    results: list[Generation | None] = [None] * len(prompts)
    chosen = torch.stack([logits.to(device) for logits in first_logits]).argmax(dim=-1).tolist()
    for step in range(max_new_tokens):
        keep = []
        for slot, (row, token) in enumerate(zip(active, chosen)):
            generated[row].append(token)
            if token in stop_ids:
                text, _ = cut_at_stop(tokenizer.decode(generated[row][:-1], skip_special_tokens=False), stop_strings)
                results[row] = Generation(text, len(prompts[row]), len(generated[row]), "end_token")
                continue
            if stop_strings:
                text, hit = cut_at_stop(tokenizer.decode(generated[row], skip_special_tokens=False), stop_strings)
                if hit:
                    results[row] = Generation(text, len(prompts[row]), len(generated[row]), "stop_string")
                    continue
            keep.append(slot)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            for layer in cache.layers:
                layer.batch_select_indices(index)
            active = [active[slot] for slot in keep]
        logits = model(
            input_ids=torch.tensor([[generated[row][-1]] for row in active], device=device),
            position_ids=torch.tensor([[len(prompts[row]) + len(generated[row]) - 1] for row in active], device=device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            row_starts=[starts[row] for row in active],
        ).logits[:, -1]
        chosen = logits.argmax(dim=-1).tolist()
    for row in range(len(prompts)):
        if results[row] is None:
            text, _ = cut_at_stop(tokenizer.decode(generated[row], skip_special_tokens=False), stop_strings)
            results[row] = Generation(text, len(prompts[row]), len(generated[row]), "length")
    return results


def _generate_batch(model, tokenizer, prompts, max_new_tokens, stop_ids, stop_strings) -> list[Generation]:
    """One left-padded batch through transformers' ``generate`` (greedy), ended the same way as :func:`_decode_batch`.

    transformers stops a row at any id of ``eos_token_id`` and, given the tokenizer, at a stop string;
    the row is then padded. Each row is read back token by token with the rules of the batch-invariant
    path, so both paths report the same text, token count and reason for the same tokens.
    """
    device = _device(model)
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=sorted(stop_ids),
        pad_token_id=pad,
        stop_strings=list(stop_strings) or None,
        tokenizer=tokenizer if stop_strings else None,
    )
    results = []
    for prompt, tokens in zip(prompts, output[:, width:].tolist()):
        result = None
        for end, token in enumerate(tokens, start=1):
            if token in stop_ids:
                text, _ = cut_at_stop(tokenizer.decode(tokens[: end - 1], skip_special_tokens=False), stop_strings)
                result = Generation(text, len(prompt), end, "end_token")
                break
            if stop_strings:
                text, hit = cut_at_stop(tokenizer.decode(tokens[:end], skip_special_tokens=False), stop_strings)
                if hit:
                    result = Generation(text, len(prompt), end, "stop_string")
                    break
        if result is None:
            text, _ = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=False), stop_strings)
            result = Generation(text, len(prompt), len(tokens), "length")
        results.append(result)
    return results


#: Decoding paths: ``batch_invariant`` (this module's decoder; a row's output never depends on its
#: batch) and ``generate`` (transformers' batched ``generate``: one attention call per layer for
#: the whole padded batch, faster on a GPU, but a near-tie may break differently at another batch size).
DECODERS = ("batch_invariant", "generate")


def _free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop_strings: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    decoder: str = "batch_invariant",
) -> tuple[list[Generation], Throughput]:
    """Greedy continuations of tokenised ``prompts``, in input order, and the decoding throughput.

    ``stop_strings`` end a row when they appear in its text; those that are single tokens of the
    tokenizer are matched as tokens. ``progress`` is called with the number of rows done. A batch
    that runs out of accelerator memory is retried at half the size (down to one row); the size
    that finally ran is :attr:`Throughput.batch_size`.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be positive")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    stop_ids = stop_token_ids(tokenizer, model, stop_strings)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    began = time.perf_counter()
    invariant = decoder == "batch_invariant"
    computed = sum(len(p) for p in prompts)
    try:
        with torch.inference_mode(), batch_invariant(model) if invariant else nullcontext():
            prefill = _Prefill(model, prompts) if invariant else None
            first = 0
            while first < len(order):
                chunk = order[first : first + batch_size]
                rows = [list(prompts[i]) for i in chunk]
                try:
                    if invariant:
                        decoded = _decode_batch(
                            model, tokenizer, rows, prefill, max_new_tokens, stop_ids, list(stop_strings)
                        )
                    else:
                        decoded = _generate_batch(model, tokenizer, rows, max_new_tokens, stop_ids, list(stop_strings))
                except torch.OutOfMemoryError:
                    _free_accelerator_memory()
                    if batch_size == 1:
                        raise UserError(
                            f"one prompt of {len(rows[0])} tokens plus {max_new_tokens} new tokens does not fit the "
                            "memory of "
                            f"{_device(model)}; give the evaluation job more GPUs (resources.evaluate) or lower "
                            "the task's max_new_tokens (tasks.<task>.max_new_tokens)."
                        ) from None
                    batch_size = max(1, batch_size // 2)
                    log.warning("out of memory at a batch of %d rows; retrying at %d", len(rows), batch_size)
                    continue
                for index, item in zip(chunk, decoded):
                    results[index] = item
                first += len(chunk)
                if progress:
                    progress(first)
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - began
    return results, Throughput(
        wall_time_s=elapsed,
        prompt_tokens=sum(len(p) for p in prompts),
        prompt_tokens_computed=prefill.computed_tokens if invariant else computed,
        generated_tokens=sum(r.generated_tokens for r in results),
        batch_size=batch_size,
    )
