"""A model's decoding functions (``GPT.prefill`` and ``GPT.step``) exported to ONNX and run by ONNX Runtime:
the sampler's fast path on a CPU.

A one-token step of a 4-layer, 128-wide model is about a hundred operations on vectors of 128 numbers;
PyTorch spends more time dispatching each one from Python than doing its arithmetic. ONNX Runtime runs
the exported graph from C++, with its own fusions (layer norm, GELU, transposed matmuls), in a fraction
of that, and the half-window re-encode (``sampler.Decoder``) in a third of PyTorch's time. Exporting
takes ~0.2 s per model; where ONNX Runtime is missing or the export fails, the sampler uses the same
functions in PyTorch (same logits, slower) and says so once with a ``RuntimeWarning``.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import torch
import torch.nn as nn

from .model import GPT, KVCache

_LOCK = threading.Lock()  # one export per model at a time; the warnings filter below is process-wide state


class _Function(nn.Module):
    """One of the model's methods as a module's forward, which is what the exporter takes."""

    def __init__(self, model: GPT, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args):
        return getattr(self.model, self.method)(*args)


def _session(model: GPT, method: str, example: tuple, inputs: list[str], outputs: list[str]):
    import onnxruntime as ort  # optional at import time: without it the sampler stays in PyTorch

    graph = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream, but it exports these fixed-shape functions
        # in ~0.1 s each, where the dynamo-based one takes seconds per model.
        warnings.simplefilter("ignore")
        torch.onnx.export(_Function(model, method), example, graph, dynamo=False, input_names=inputs, output_names=outputs)
    options = ort.SessionOptions()
    # One thread per stream: the app runs two generations at once on a 2-core machine.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its notices about the optimised graph are not for our users
    return ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])


class OnnxDecoding:
    """A model's ``step`` and half-window ``prefill`` as ONNX Runtime sessions (weights baked in, batch 1)."""

    def __init__(self, model: GPT):
        self.versions = _versions(model)
        cfg = model.config
        self.prefill_length = cfg.block_size // 2  # what sampler.Decoder re-encodes when its window is full
        cache = KVCache(cfg)
        layers = range(cfg.n_layer)
        self.step_inputs = ["idx", "pos", "mask", *(f"keys.{i}" for i in layers), *(f"values.{i}" for i in layers)]
        self.step_outputs = ["logits", *(f"new_keys.{i}" for i in layers), *(f"new_values.{i}" for i in layers)]
        was_training = model.training
        model.eval()
        try:
            self.step = _session(model, "step", (torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                                                 cache.mask, tuple(cache.keys), tuple(cache.values)),
                                 self.step_inputs, self.step_outputs)
            self.prefill = _session(model, "prefill", (torch.zeros(1, self.prefill_length, dtype=torch.long),), ["idx"],
                                    ["logits", *(f"keys.{i}" for i in layers), *(f"values.{i}" for i in layers)])
        finally:
            model.train(was_training)

    def stream(self, cache: KVCache) -> "OnnxStream":
        return OnnxStream(self, cache)


class OnnxStream:
    """Feeds one sequence (batch 1) into ``cache`` through an ``OnnxDecoding``, without copying the cache:
    ONNX Runtime reads its tensors where they lie and writes one token's outputs into buffers made once."""

    def __init__(self, decoding: OnnxDecoding, cache: KVCache):
        if cache.keys.size(1) != 1:
            raise ValueError("an ONNX stream decodes one sequence (batch size 1)")
        self.decoding, self.cache = decoding, cache
        self.prefill_length = decoding.prefill_length
        # NumPy views of the cache's tensors: writing through them is writing the cache, a few µs faster than torch.
        self.keys, self.values, self.mask = cache.keys.numpy(), cache.values.numpy(), cache.mask.numpy()
        self.idx = np.zeros(1, dtype=np.int64)
        self.pos = np.zeros(1, dtype=np.int64)
        n_layer, _, n_head, _, head_size = self.keys.shape
        self.logits = np.zeros((1, decoding.step.get_outputs()[0].shape[1]), dtype=np.float32)
        self.new_keys = np.zeros((n_layer, 1, n_head, 1, head_size), dtype=np.float32)
        self.new_values = np.zeros_like(self.new_keys)
        self.binding = decoding.step.io_binding()
        for name, array in zip(decoding.step_inputs, [self.idx, self.pos, self.mask, *self.keys, *self.values]):
            self.binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        # Each layer's new key/value lands in its row of one array, so two NumPy writes store them all.
        for name, array in zip(decoding.step_outputs, [self.logits, *self.new_keys, *self.new_values]):
            self.binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Restart the cache with ``ids`` (exactly ``prefill_length`` of them); the logits (V,) after the last."""
        if len(ids) != self.prefill_length:
            raise ValueError(f"the exported prefill takes {self.prefill_length} tokens, got {len(ids)}")
        logits, *present = self.decoding.prefill.run(None, {"idx": np.array([ids], dtype=np.int64)})
        n_layer = len(present) // 2
        self.cache.reset()
        self.cache.start([torch.from_numpy(a) for a in present[:n_layer]], [torch.from_numpy(a) for a in present[n_layer:]])
        return logits[0, -1]

    def __call__(self, token: int) -> np.ndarray:
        """The next-token logits (V,) after ``token``, which takes the cache's next position."""
        position = self.cache.length
        if position >= self.mask.shape[1]:
            raise ValueError(f"sequence of {position + 1} tokens is longer than the context ({self.mask.shape[1]})")
        self.idx[0], self.pos[0] = token, position
        self.decoding.step.run_with_iobinding(self.binding)
        # KVCache.append, through the NumPy views.
        self.keys[:, :, :, position] = self.new_keys[:, :, :, 0]
        self.values[:, :, :, position] = self.new_values[:, :, :, 0]
        self.mask[0, position] = 0.0
        self.cache.length += 1
        return self.logits[0].copy()  # a copy: the buffer is overwritten by the next call


def _versions(model: GPT) -> tuple[int, ...]:
    # Every in-place change of a parameter (an optimizer step, load_state_dict) bumps its version.
    try:
        return tuple(p._version for p in model.parameters())
    except RuntimeError:  # parameters made under inference_mode keep no version: treat them as fixed
        return ()


def for_model(model: GPT) -> OnnxDecoding | None:
    """The model's exported decoding, made on first use and again whenever its weights have changed since;
    None where it cannot be used (no ONNX Runtime, a model without attention, not on the CPU in float32,
    or the export failed), and the caller stays in PyTorch."""
    param = next(model.parameters())
    if model.config.n_layer == 0 or param.device.type != "cpu" or param.dtype != torch.float32:
        return None
    found = model.__dict__.get("_onnx_decoding", False)  # in __dict__, not a submodule: never saved, never trained
    if found is None or (found and found.versions == _versions(model)):
        return found
    with _LOCK:
        found = model.__dict__.get("_onnx_decoding", False)
        if found is False or (found is not None and found.versions != _versions(model)):
            try:
                found = OnnxDecoding(model)
            except Exception as error:  # no onnxruntime, or an exporter that cannot take this build's model
                warnings.warn(f"sampling in PyTorch, more slowly: the ONNX Runtime decoding is unavailable ({error!r})",
                              RuntimeWarning, stacklevel=2)
                found = None
            model.__dict__["_onnx_decoding"] = found
        return found
