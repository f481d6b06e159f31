"""Intercepting the attention of a model: one mechanism for Hugging Face and plain PyTorch.

The hook point is the *attention function* call of Hugging Face's attention interface:

    attn_output, attn_weights = attention_function(module, query, key, value, attention_mask,
                                                   scaling=..., dropout=..., **kwargs)

with ``query`` ``[batch, query_heads, q_len, head_dim]`` after RoPE and ``key``
``[batch, kv_heads, kv_len, head_dim]``: the whole KV cache of the layer after this step's
update, not repeated over the GQA group. ``module.layer_idx`` names the layer. The recorder
wraps that function: it hands (layer, query, key) to its consumer, then calls the original
function, so the model computes exactly what it would without the hook.

Two ways to reach the function, one wrapper:

- Hugging Face models (Llama, Qwen2/3, Mistral, ... anything whose attention calls
  ``ALL_ATTENTION_FUNCTIONS``): the wrapper is registered in ``AttentionInterface`` (and the mask
  registry, with the mask of the implementation it wraps) under ``spin_capture`` and the model's
  configs are switched to it. transformers is imported only here, lazily.
- plain PyTorch attention modules: any submodule with an integer ``layer_idx`` and a callable
  ``attention_interface`` attribute of the same signature (see tiny_llama.py); the attribute is
  replaced by the wrapper. A module of another shape can call ``recorder.record(layer, query,
  key)`` itself.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from .rules import CaptureError

HF_NAME = "spin_capture"


class AttentionRecorder:
    """Receives every intercepted attention call; `consumer(layer, query, key)` does the work."""

    def __init__(self, consumer: Callable[[int, torch.Tensor, torch.Tensor], None]):
        self.consumer = consumer
        self.calls = 0

    def record(self, layer: int, query: torch.Tensor, key: torch.Tensor) -> None:
        self.calls += 1
        self.consumer(int(layer), query, key)

    def wrap(self, original: Callable) -> Callable:
        def attention_function(module, query, key, value, attention_mask, *args, **kwargs):
            layer = getattr(module, "layer_idx", None)
            if layer is None:
                raise CaptureError(
                    f"an attention module of class {type(module).__name__} has no layer_idx; the "
                    "capture needs it to tell layers apart")
            self.record(layer, query, key)
            return original(module, query, key, value, attention_mask, *args, **kwargs)

        attention_function.spin_capture_original = original
        return attention_function


def install_modules(model: torch.nn.Module, recorder: AttentionRecorder) -> Callable[[], None]:
    """Wraps the `attention_interface` attribute of every plain attention module.

    Returns a function that undoes it. Raises CaptureError if the model has no such module.
    """
    undo = []
    for module in model.modules():
        fn = getattr(module, "attention_interface", None)
        if callable(fn) and isinstance(getattr(module, "layer_idx", None), int):
            original = getattr(fn, "spin_capture_original", fn)  # never wrap twice
            undo.append((module, original))
            module.attention_interface = recorder.wrap(original)
    if not undo:
        raise CaptureError(
            f"{type(model).__name__} has no attention module to hook: a plain PyTorch model "
            "needs modules with an integer `layer_idx` and an `attention_interface(module, query, "
            "key, value, attention_mask, **kwargs)` attribute (traces/capture/spin_capture/"
            "tiny_llama.py shows one), or must call recorder.record(layer, query, key) itself")

    def restore():
        for module, original in undo:
            module.attention_interface = original

    return restore


def is_hf_model(model: torch.nn.Module) -> bool:
    """A transformers model, told without importing transformers unless it is already loaded."""
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel  # noqa: PLC0415 (lazy on purpose)
    return isinstance(model, PreTrainedModel)


def _configs(model: torch.nn.Module) -> list:
    seen, out = set(), []
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation") and id(config) not in seen:
            seen.add(id(config))
            out.append(config)
    return out


def install_hf(model: torch.nn.Module, recorder: AttentionRecorder) -> Callable[[], None]:
    """Routes a transformers model's attention through the recorder (see the module doc)."""
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS  # noqa: PLC0415
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: PLC0415
    except ImportError as e:
        raise CaptureError(
            "this transformers has no attention or attention-mask registry (needs transformers "
            f">= 4.53): {e}") from e

    configs = _configs(model)
    if not configs:
        raise CaptureError(f"{type(model).__name__}: no config with an attention implementation")
    original = configs[0]._attn_implementation or "sdpa"
    if original == HF_NAME:
        raise CaptureError("the model's attention is already hooked by spin_capture")
    if original != "eager" and original not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        raise CaptureError(f"the model's attention implementation '{original}' is not registered "
                           "in transformers' AttentionInterface")
    if original not in ALL_MASK_ATTENTION_FUNCTIONS.valid_keys():
        raise CaptureError(f"no attention-mask function is registered for '{original}'")

    eager_cache: dict = {}

    def delegate(module, *args, **kwargs):
        if original != "eager":
            return ALL_ATTENTION_FUNCTIONS[original](module, *args, **kwargs)
        cls = type(module)
        if cls not in eager_cache:
            fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None)
            if fn is None:
                raise CaptureError(f"{cls.__module__} has no eager_attention_forward to delegate to")
            eager_cache[cls] = fn
        return eager_cache[cls](module, *args, **kwargs)

    # .register (class-wide), not item assignment: the mask code looks names up class-wide and
    # treats an unknown one as "needs no mask", which would make attention bidirectional.
    ALL_ATTENTION_FUNCTIONS.register(HF_NAME, recorder.wrap(delegate))
    ALL_MASK_ATTENTION_FUNCTIONS.register(HF_NAME, ALL_MASK_ATTENTION_FUNCTIONS[original])
    previous = [(c, c._attn_implementation) for c in configs]
    try:
        model.set_attn_implementation(HF_NAME)
    except Exception:  # noqa: BLE001 (older versions: set the configs directly, below)
        pass
    for config in configs:
        if config._attn_implementation != HF_NAME:
            try:
                config._attn_implementation = HF_NAME
            except AttributeError:  # a read-only property over the internal field
                config._attn_implementation_internal = HF_NAME
        if config._attn_implementation != HF_NAME:
            raise CaptureError(f"cannot switch {type(config).__name__}'s attention "
                               f"implementation to '{HF_NAME}'")

    def restore():
        for config, impl in previous:
            try:
                config._attn_implementation = impl
            except AttributeError:
                config._attn_implementation_internal = impl

    return restore


def install(model: torch.nn.Module, recorder: AttentionRecorder) -> Callable[[], None]:
    """Hooks a transformers model through its AttentionInterface, any other module through its
    attention modules' `attention_interface` attribute. Returns the undo function."""
    if is_hf_model(model):
        return install_hf(model, recorder)
    return install_modules(model, recorder)
