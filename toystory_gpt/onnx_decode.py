"""A model's decoding functions (``GPT.prefill`` and ``GPT.step``) exported to ONNX and run by ONNX Runtime:
the sampler's fast path on a CPU.

A one-token step of a 4-layer, 128-wide model is about a hundred operations on vectors of 128 numbers;
PyTorch spends more time dispatching each one from Python than doing its arithmetic. ONNX Runtime runs
the exported graph from C++, with its own fusions (layer norm, GELU, transposed matmuls), in a fraction
of that, and the half-window re-encode (``sampler.Decoder``) in a third of PyTorch's time. Exporting
takes ~0.2 s per model and is checked against PyTorch before use; where ONNX Runtime is missing or
the export fails or disagrees, the sampler uses the same functions in PyTorch (the same logits to
float rounding, slower) and says so with a ``RuntimeWarning``, once per model.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import torch
import torch.nn as nn

from .model import GPT, KVCache

_LOCK = threading.Lock()  # one export at a time in the process: the warnings filter below is process-wide state
_TOLERANCE = 1e-4  # the exported functions must give PyTorch's logits to this (they agree to ~1e-6)


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
        # eval(): the exporter puts the module back in the mode it found it in, and a new module starts in training mode.
        torch.onnx.export(_Function(model, method).eval(), example, graph, dynamo=False, input_names=inputs,
                          output_names=outputs)
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
            self._check(model)
        finally:
            model.train(was_training)

    def _check(self, model: GPT) -> None:
        """Run the exported prefill and one step on a scratch cache and compare with PyTorch: an exporter that
        mistranslates something raises here, and the caller falls back, instead of sampling wrong text."""
        ids = torch.arange(self.prefill_length + 1) % model.config.vocab_size
        stream = self.stream(KVCache(model.config))
        with torch.no_grad():
            expected = model(ids[None])[0][0].numpy()
        got = [stream.prefill(ids[:-1].tolist()), stream(int(ids[-1]))]
        for logits, want in zip(got, expected[-2:]):
            if not np.allclose(logits, want, rtol=0, atol=_TOLERANCE):
                raise ValueError(f"the exported model's logits differ from PyTorch's by {np.abs(logits - want).max():.2g}")

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


def _versions(model: GPT) -> tuple | None:
    """What identifies the weights' current values: each parameter's object, storage and in-place version
    (an optimizer step or load_state_dict bumps it; ``p.data = …`` or ``.to()`` changes the storage).
    None for parameters made under inference_mode, which keep no version: their export is never reused."""
    try:
        return tuple((id(p), p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:
        return None


def for_model(model: GPT) -> OnnxDecoding | None:
    """The model's exported decoding, made on first use and again whenever its weights have changed since;
    None where it cannot be used (no ONNX Runtime, a model without attention or with a one-token context,
    not on the CPU in float32, or the export failed), and the caller stays in PyTorch."""
    param = next(model.parameters())
    if model.config.n_layer == 0 or model.config.block_size < 2 or param.device.type != "cpu" or param.dtype != torch.float32:
        return None

    def current(found) -> bool:
        return found is None or (found is not False and found.versions is not None and found.versions == _versions(model))

    found = model.__dict__.get("_onnx_decoding", False)  # in __dict__, not a submodule: never saved, never trained
    if current(found):
        return found
    with _LOCK:
        found = model.__dict__.get("_onnx_decoding", False)
        if not current(found):
            try:
                found = OnnxDecoding(model)
            except Exception as error:  # no onnxruntime, or an exporter that cannot take this build's model
                warnings.warn(f"sampling in PyTorch, more slowly: the ONNX Runtime decoding is unavailable ({error!r})",
                              RuntimeWarning, stacklevel=2)  # None is remembered: one warning per model
                found = None
            model.__dict__["_onnx_decoding"] = found
        return found
