"""A loaded model's decoding functions (``decoding.prefill`` and ``decoding.step``) exported to ONNX and run by
ONNX Runtime: the sampler's fast path on a CPU.

A one-token step of a small model is about a hundred operations on vectors of a hundred numbers: PyTorch
spends more time dispatching each one from Python than doing its arithmetic, while ONNX Runtime runs the
exported graph from C++ with its own fusions. An export bakes in the weights, so it belongs to a loaded
model whose weights no longer change (``weights.SavedModel.exported``). It is checked against PyTorch
before use; where ONNX Runtime is missing or the export fails or disagrees, ``export`` warns once and
returns None, and the sampler runs the same functions in PyTorch.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
import torch
import torch.nn as nn

from .decoding import Cached, prefill, refill_length, step
from .model import GPT

_LOCK = threading.Lock()  # one export at a time in the process: the warnings filter below is process-wide state
_TOLERANCE = 1e-4  # the exported functions must give PyTorch's logits to this


class _Function(nn.Module):
    """``prefill`` or ``step`` of one model as a module's forward, which is what the exporter takes."""

    def __init__(self, model: GPT, function):
        super().__init__()
        self.model, self.function = model, function

    def forward(self, *args):
        return self.function(self.model, *args)


def _session(model: GPT, function, example: tuple, inputs: list[str], outputs: list[str]):
    import onnxruntime as ort  # optional at import time: without it the sampler stays in PyTorch

    graph = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated upstream, but it exports these fixed-shape functions
        # in a fraction of the dynamo-based exporter's time.
        warnings.simplefilter("ignore")
        # eval(): the exporter puts the module back in the mode it found it in, and a new module starts in
        # training mode.
        torch.onnx.export(_Function(model, function).eval(), example, graph, dynamo=False, input_names=inputs,
                          output_names=outputs)
    options = ort.SessionOptions()
    # One thread per stream: the app runs two generations at once on a 2-core machine.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its notices about the optimised graph are not for our users
    return ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])


class OnnxDecoding:
    """One model's ``step`` and half-window ``prefill`` as ONNX Runtime sessions, weights baked in."""

    def __init__(self, model: GPT):
        if model.training:
            raise ValueError("export a model in eval mode: dropout would be baked into the graph")
        self.model = model
        cfg = model.config
        self.prefill_length = refill_length(cfg.block_size)  # the re-encode of a full window
        layers = range(cfg.n_layer)
        self.step_inputs = ["idx", "pos", "mask", *(f"keys.{i}" for i in layers), *(f"values.{i}" for i in layers)]
        self.step_outputs = ["logits", *(f"new_keys.{i}" for i in layers), *(f"new_values.{i}" for i in layers)]
        scratch = Cached(model).cache
        one = torch.zeros(1, dtype=torch.long)
        self.step = _session(model, step, (one, one, scratch.mask, tuple(scratch.keys), tuple(scratch.values)),
                             self.step_inputs, self.step_outputs)
        self.prefill = _session(model, prefill, (torch.zeros(1, self.prefill_length, dtype=torch.long),), ["idx"],
                                ["logits", *(f"keys.{i}" for i in layers), *(f"values.{i}" for i in layers)])
        self._check()

    def _check(self) -> None:
        """Run the exported prefill and one step and compare with PyTorch: an exporter that mistranslates
        something raises here, and the caller falls back, instead of sampling wrong text."""
        ids = (torch.arange(self.prefill_length + 1) % self.model.config.vocab_size).tolist()
        decoder = self.decoder()
        got = [decoder.start(ids[:-1]), decoder.push(ids[-1])]
        with torch.no_grad():
            expected = self.model(torch.tensor([ids]))[0][0, -2:].numpy()
        for logits, want in zip(got, expected):
            if not np.allclose(logits, want, rtol=0, atol=_TOLERANCE):
                raise ValueError(f"the exported model's logits differ from PyTorch's by "
                                 f"{np.abs(logits - want).max():.2g}")

    def decoder(self) -> OnnxDecoder:
        return OnnxDecoder(self)


class OnnxDecoder(Cached):
    """``Cached``, with the step (and the full-window re-encode) run by ONNX Runtime: it reads the cache
    where it lies and writes one token's outputs into buffers made once, without copying anything."""

    def __init__(self, exported: OnnxDecoding):
        super().__init__(exported.model)
        self.exported = exported
        cache = self.cache
        self.idx = np.zeros(1, dtype=np.int64)
        self.pos = np.zeros(1, dtype=np.int64)
        n_layer, _, n_head, _, head_size = cache.keys.shape
        self.logits = np.zeros((1, self.model.config.vocab_size), dtype=np.float32)
        # Each layer's new key and value lands in its row of one array, which KVCache.append stores in one write.
        self.new_keys = np.zeros((n_layer, 1, n_head, 1, head_size), dtype=np.float32)
        self.new_values = np.zeros_like(self.new_keys)
        self.binding = exported.step.io_binding()
        inputs = [self.idx, self.pos, cache.mask.numpy(), *cache.keys.numpy(), *cache.values.numpy()]
        for name, array in zip(exported.step_inputs, inputs):
            self.binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        for name, array in zip(exported.step_outputs, [self.logits, *self.new_keys, *self.new_values]):
            self.binding.bind_output(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)

    def encode(self, ids: list[int]) -> np.ndarray:
        if len(ids) != self.exported.prefill_length:  # a prompt of another length: PyTorch's prefill takes any
            return super().encode(ids)
        logits, *present = self.exported.prefill.run(None, {"idx": np.array([ids], dtype=np.int64)})
        n_layer = len(present) // 2
        self.cache.start(present[:n_layer], present[n_layer:])
        return logits[0, -1]

    def advance(self, token: int) -> np.ndarray:
        self.idx[0], self.pos[0] = token, self.cache.length
        self.exported.step.run_with_iobinding(self.binding)
        self.cache.append(self.new_keys, self.new_values)
        return self.logits[0].copy()  # a copy: the buffer is overwritten by the next call


def export(model: GPT) -> OnnxDecoding | None:
    """``model``'s decoding in ONNX Runtime, or None where none is needed or possible: no attention, a one-token
    context or not on the CPU in float32 (silently), no ONNX Runtime or a failed export (with a warning)."""
    param = next(model.parameters())
    if (not model.config.has_attention or model.config.block_size < 2 or param.device.type != "cpu"
            or param.dtype != torch.float32):
        return None
    with _LOCK:
        try:
            return OnnxDecoding(model)
        except Exception as error:  # no onnxruntime, or an exporter that cannot take this build's model
            warnings.warn(f"sampling in PyTorch, more slowly: the ONNX Runtime decoding is unavailable ({error!r})",
                          RuntimeWarning, stacklevel=2)
            return None
