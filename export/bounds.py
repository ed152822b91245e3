"""A componentwise forward rounding-error bound, propagated through an ONNX graph in float64.

For every float tensor t of the graph, `propagate(proto, feeds)` gives the float64 oracle value
v_t (export/oracle.py) and a non-negative array e_t of the same shape such that every correct
float32 evaluation of the graph (any summation order, with or without FMA, fused or not) lies
within e_t of the exact value, element by element. The rules (Higham, "Accuracy and Stability
of Numerical Algorithms", 2nd ed., SIAM 2002, ch. 3, eq. (3.4)-(3.5) and Lemma 3.1):

  u = 2^-24, gamma_n = n u / (1 - n u)
  inner products (MatMul, Gemm, Conv incl. grouped/depthwise):  |fl(w.x) - w.x| <= gamma_n |w|.|x|
    in any order; with inputs carrying errors e_w, e_x (hats = evaluated values):
    e_y = gamma_n |w^|.|x^| + e_w.|x| + |w|.e_x + e_w.e_x, and a bias added in the same
    accumulation (fused Gemm) counts as one more term: gamma_{n+1} (|w^|.|x^| + |b^|) + e_b
  Add/Sub: e_a + e_b + u (|a^| + |b^|)   Mul: e_a|b| + |a|e_b + e_a e_b + u |a^ b^|
  Div: (e_a + |a/b| e_b) / (|b| - e_b) + u |a^/b^|
  Relu, max-pooling: Lipschitz 1 (max of the errors over the window), and 0 where the input is
    surely negative (oracle < -2e); LeakyRelu(a): max(1,|a|), |a| where surely negative; Clip
    (ReLU6) by constants: 1, and 0 where surely clipped
  Tanh: Lipschitz 1, Sigmoid: 1/4 (both: the derivative's largest value within 2e of the input),
    plus the float32 implementation's own error, measured (TF eager, XLA and onnxruntime vs
    float64 on 5e6 points: tanh <= 5.5 u |y| with subnormal results flushed to 0; sigmoid <=
    1.74e-7 = 2.9 u absolute, onnxruntime's being an absolute, not relative, approximation):
    allowed 12 u |y| + 2^-125 (tanh), 12 u |y| + 6 u (sigmoid)
  AveragePool/GlobalAveragePool/ReduceMean over k terms: mean of the errors + gamma_{k+1} mean|x^|;
    ReduceSum: sum of the errors + gamma_k sum|x^|
  Sqrt: min(sqrt(2e), 2e / (2 sqrt(lo))) carried (lo = the smallest input in reach), + 2u |y^|;
    Reciprocal: as Div with a = 1; Neg, Abs: exact (the errors pass through); Max, Min: the larger error;
    ReduceMax, ReduceMin: the largest error over the reduced elements
  Exp: |y| (exp(2e) - 1) carried, + EXP_ULP u |y^| for the float32 implementation
  Log: e / lo carried (lo = the smallest input in reach; no bound where lo <= 0), + 4 u |y^| + 2 u
    absolute for the implementation (measured, TF eager, XLA, onnxruntime on 4e6 inputs from 1e-30
    to 1e30 and around 1: at most 2 u |y| + 0.66 u)
  Softmax (opset 13+, one axis of k terms; E = the largest input error along the axis):
    y (exp(2E) - 1) carried in (softmax(x + d) / softmax(x) lies in [exp(-2E), exp(2E)] for |d| <= E),
    plus a relative rounding of u (|x - max| + sum_j y_j |x_j - max| + log k + EXP_ULP) + gamma_k on
    y exp(2E): the shift by the row maximum, each exp, the sum of k positive terms and the division,
    in the max-shifted or the log-sum-exp form. Measured (TF eager, XLA, onnxruntime; rows of 2 to
    1,000 terms, inputs N(0, 0.1) to N(0, 100)): the error beyond the terms other than EXP_ULP u was
    at most 0.08 u; EXP_ULP = 4
  BatchNormalization (inference, an affine map y = a (x - m) + B, a = scale / sqrt(var + eps)):
    |a| e_x + gamma_8 (|a| (|x^| + |m|) + |B|), covering the folded and unfolded forms
  data movement (Reshape, Flatten, Transpose, Identity, Squeeze, Unsqueeze, Concat, Slice,
    Gather, Pad, Expand, Tile, widening Cast): exact; the errors move with the data.

Each rounding also allows 2^-125 absolute (per term for inner products) for results flushed to
zero, and every bound is widened by 2^-28 relative to cover the float64 oracle's own rounding
(the same rules with 2^-53 in place of 2^-24). Graph inputs and weights are exact; a constant
that TensorFlow's grappler folded from float32 arithmetic (named `ConstantFolding/...`, e.g. the
reciprocal 1/std the standardisation's division became) carries 8 u |c|, so either the ONNX
graph's or TensorFlow's float64 oracle may be used. An op with no rule (Pow, Erf, LSTM,
LayerNormalization as one op, ...) gives no bound to its outputs nor to anything
downstream: `rules[name]` says `fallback (<op type> <node name>)` and export/verdict.py judges
such tensors against TensorFlow eager's own float32 error instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from tfscope.export.oracle import GraphOracle, _elem_types

U = 2.0**-24  # float32 unit roundoff
TINY = 2.0**-125  # one flushed subnormal result, absolute (2^-126), doubled
ORACLE_WIDEN = 1.0 + 2.0**-28  # the float64 oracle's own rounding, relative to the float32 bound
TANH_ULP, SIGMOID_ABS = 12.0, 6.0 * U  # allowances for float32 tanh/sigmoid (see the docstring)
EXP_ULP = 4.0  # allowance for a float32 exp (Exp, Softmax), in units of u (see the docstring)
LOG_ULP, LOG_ABS = 4.0, 2.0 * U  # allowance for a float32 log: relative to |y|, and absolute (near y = 0)
FOLDED = "ConstantFolding/"  # grappler's prefix for constants it computed in float32
FOLDED_ERROR = 8.0 * U
FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def gamma(n: int | float) -> float:
    """Higham's gamma_n = n u / (1 - n u), the bound on |prod (1 + d_i)^(+-1) - 1| for n roundings."""
    nu = n * U
    if nu >= 1:
        return np.inf
    return nu / (1 - nu)


@dataclass
class GraphBounds:
    values: dict[str, np.ndarray]  # float64 oracle value of every tensor
    bounds: dict[str, np.ndarray]  # elementwise bound on |float32 evaluation - exact|; absent: no rule
    rules: dict[str, str]  # 'bound' or 'fallback (<op type> <node name>)'
    order: list[str] = field(default_factory=list)  # tensor names in topological order


class NoRule(Exception):
    """The op (or this use of it) has no bound rule."""


@dataclass
class _Ctx:
    proto: onnx.ModelProto
    opset: int
    types: dict[str, int]
    acc: dict[str, tuple[int, np.ndarray, np.ndarray]]  # inner-product output -> (n, M, carried)
    cache: dict = field(default_factory=dict)

    def rerun(self, node: onnx.NodeProto, inputs: list[np.ndarray | None], out: int = 0) -> np.ndarray:
        """The node evaluated alone on other inputs (float64), by onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
        key = (node.name, node.op_type, tuple(names), tuple(a.dtype.str for a in inputs if a is not None), out)
        if key not in self.cache:
            n = helper.make_node(node.op_type, names, [f"o{k}" for k in range(len(node.output))],
                                 domain=node.domain)
            n.attribute.extend(node.attribute)
            ins = [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(a.dtype), None)
                   for nm, a in zip(names, inputs) if a is not None]
            outs = [helper.make_tensor_value_info(f"o{k}", TensorProto.UNDEFINED, None) for k in range(len(n.output))]
            g = helper.make_graph([n], "rerun", ins, outs)
            m = helper.make_model(g, opset_imports=list(self.proto.opset_import))
            self.cache[key] = ReferenceEvaluator(m)
        feeds = {nm: a for nm, a in zip(names, inputs) if a is not None}
        return np.asarray(self.cache[key].run([f"o{out}"], feeds)[0], np.float64)


Rule = Callable[[onnx.NodeProto, list, list, list, _Ctx], list]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _hat(v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """A bound on |evaluated value|: the oracle and any evaluation are each within e of the exact."""
    return np.abs(v) + 2 * e


def _inner(a, ea, b, eb, product: Callable, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bound, M = |a^|.|b^|, carried-in error) of an inner-product map `product` bilinear in (a, b)."""
    M = product(_hat(a, ea), _hat(b, eb))
    carried = 0.0
    if np.any(ea):
        carried = carried + product(ea, np.abs(b) + eb)
    if np.any(eb):
        carried = carried + product(np.abs(a) + ea, eb)
    carried = np.broadcast_to(carried, M.shape)
    under = n * TINY * (1 + float(np.max(_hat(a, ea), initial=0)) + float(np.max(_hat(b, eb), initial=0)))
    return carried + gamma(n) * M + under, M, carried


def _matmul(node, v, e, out, ctx):
    a, b = v
    n = a.shape[-1] if a.ndim else 1
    bound, M, carried = _inner(a, e[0], b, e[1], np.matmul, n)
    ctx.acc[node.output[0]] = (n, M, carried)
    return [bound]


def _gemm(node, v, e, out, ctx):
    a, b = v[0], v[1]
    ea, eb = e[0], e[1]
    if _attr(node, "transA", 0):
        a, ea = a.T, ea.T
    if _attr(node, "transB", 0):
        b, eb = b.T, eb.T
    alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
    n = a.shape[-1]
    _, M, carried = _inner(a, ea, b, eb, np.matmul, n)
    k = n + (abs(alpha) != 1) + (abs(beta) != 1)
    if len(v) > 2 and v[2] is not None:
        c, ec = v[2], e[2]
        return [abs(alpha) * carried + abs(beta) * ec + gamma(k + 1) * (abs(alpha) * M + abs(beta) * _hat(c, ec))
                + (k + 1) * TINY]
    ctx.acc[node.output[0]] = (k, abs(alpha) * M, abs(alpha) * carried)
    return [abs(alpha) * carried + gamma(k) * abs(alpha) * M + k * TINY]


def _conv(node, v, e, out, ctx):
    x, w = v[0], v[1]
    group = int(_attr(node, "group", 1))
    n = (x.shape[1] // group) * int(np.prod(w.shape[2:]))  # terms per output element
    conv = lambda p, q: ctx.rerun(node, [p, q])  # noqa: E731  (bilinear in (x, w), no bias)
    bound, M, carried = _inner(x, e[0], w, e[1], conv, n)
    if len(v) > 2 and v[2] is not None:
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        b, eb = v[2].reshape(bshape), e[2].reshape(bshape)
        return [carried + eb + gamma(n + 1) * (M + _hat(b, eb)) + (n + 1) * TINY]
    ctx.acc[node.output[0]] = (n, M, carried)
    return [bound]


def _add(node, v, e, out, ctx):
    (a, b), (ea, eb) = v, e
    y = out[0]
    bound = np.broadcast_to(ea + eb + U * (_hat(a, ea) + _hat(b, eb)) + TINY, y.shape)
    for i in (0, 1):  # the bias folded into the accumulation (Gemm, FusedMatMul, XLA output fusion)
        acc = ctx.acc.get(node.input[i])
        if acc is not None:
            n, M, carried = acc
            c, ec = (v[1 - i], e[1 - i])
            fused = carried + ec + gamma(n + 1) * (M + _hat(c, ec)) + (n + 1) * TINY
            bound = np.maximum(bound, np.broadcast_to(fused, y.shape))
    return [bound]


def _mul(node, v, e, out, ctx):
    (a, b), (ea, eb) = v, e
    return [np.broadcast_to(ea * np.abs(b) + np.abs(a) * eb + ea * eb + U * _hat(a, ea) * _hat(b, eb) + TINY,
                            out[0].shape)]


def _div(node, v, e, out, ctx):
    (a, b), (ea, eb) = v, e
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.abs(b) - 2 * eb  # |b^| and |b| both at least this
        carried = np.where(room > 0, (ea + np.abs(a / b) * 2 * eb) / room, np.inf)
        rounding = np.where(room > 0, U * _hat(a, ea) / room, np.inf)
    return [np.broadcast_to(carried + rounding + TINY, out[0].shape)]


def _relu(node, v, e, out, ctx):
    # where the oracle is below -2e, the exact and every evaluated input are negative: both give 0
    return [np.where(v[0] < -2 * e[0], 0.0, e[0])]


def _clip(node, v, e, out, ctx):
    """Clip (e.g. ReLU6) by exact constants: Lipschitz 1, and 0 where surely clipped."""
    if any(np.any(ei) for ei in e[1:] if ei is not None):
        raise NoRule
    lo = v[1] if len(v) > 1 and v[1] is not None else _attr(node, "min", -np.inf)
    hi = v[2] if len(v) > 2 and v[2] is not None else _attr(node, "max", np.inf)
    x, ex = v[0], e[0]
    return [np.where((x < lo - 2 * ex) | (x > hi + 2 * ex), 0.0, ex)]


def _leaky(node, v, e, out, ctx):
    alpha = abs(float(_attr(node, "alpha", 0.01)))
    slope = np.where(v[0] < -2 * e[0], alpha, max(1.0, alpha))
    return [slope * e[0] + U * alpha * _hat(v[0], e[0]) + TINY]


def _nearest_zero(v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The smallest |t| over every t within 2e of the oracle (where the exact and evaluated inputs lie)."""
    return np.maximum(np.abs(v) - 2 * e, 0.0)


def _tanh(node, v, e, out, ctx):
    slope = 1 - np.tanh(_nearest_zero(v[0], e[0])) ** 2  # tanh' falls with |t|: its largest value in reach
    return [slope * e[0] + TANH_ULP * U * (np.abs(out[0]) + 2 * e[0]) + TINY]


def _sigmoid(node, v, e, out, ctx):
    s = 1 / (1 + np.exp(-_nearest_zero(v[0], e[0])))
    slope = s * (1 - s)  # sigmoid' = s (1 - s), largest (1/4) at 0 and falling with |t|
    return [slope * e[0] + TANH_ULP * U * (np.abs(out[0]) + 0.5 * e[0]) + SIGMOID_ABS]


def _maxpool(node, v, e, out, ctx):
    if len(node.output) > 1 and node.output[1]:
        raise NoRule  # the indices output is discontinuous in the data
    return [ctx.rerun(node, [e[0]])]


def _reduce_max(node, v, e, out, ctx):
    """ReduceMax/ReduceMin: Lipschitz 1 (the largest error over the reduced elements), no rounding."""
    if any(np.any(ei) for ei in e[1:] if ei is not None):
        raise NoRule
    return [ctx.rerun(node, [e[0], *v[1:]])]


def _mean_like(node, v, e, out, ctx, k: int):
    x, ex = v[0], e[0]
    rest = [None if a is None else a for a in v[1:]]
    mean_e = ctx.rerun(node, [ex, *rest])
    mean_abs = ctx.rerun(node, [_hat(x, ex), *rest])
    return [mean_e + gamma(k + 1) * mean_abs + (k + 1) * TINY]


def _avgpool(node, v, e, out, ctx):
    return _mean_like(node, v, e, out, ctx, int(np.prod(_attr(node, "kernel_shape"))))


def _global_avg(node, v, e, out, ctx):
    return _mean_like(node, v, e, out, ctx, int(np.prod(v[0].shape[2:])))


def _reduce_mean(node, v, e, out, ctx):
    k = max(1, v[0].size // max(1, out[0].size))
    return _mean_like(node, v, e, out, ctx, k)


def _reduce_sum(node, v, e, out, ctx):
    x, ex = v[0], e[0]
    rest = list(v[1:])
    if any(np.any(ei) for ei in e[1:] if ei is not None):
        raise NoRule  # the axes are data: they must be exact
    k = max(1, x.size // max(1, out[0].size))
    return [ctx.rerun(node, [ex, *rest]) + gamma(k) * ctx.rerun(node, [_hat(x, ex), *rest]) + k * TINY]


def _sqrt(node, v, e, out, ctx):
    x, ex = v[0], e[0]
    lo = np.maximum(x - 2 * ex, 0.0)  # the smallest input, exact or evaluated, in reach
    with np.errstate(divide="ignore", invalid="ignore"):
        carried = np.where(lo > 0, np.minimum(np.sqrt(2 * ex), ex / np.sqrt(lo)), np.sqrt(2 * ex))
    return [carried + 2 * U * (np.abs(out[0]) + carried) + TINY]


def _reciprocal(node, v, e, out, ctx):
    return _div(node, [np.ones_like(v[0]), v[0]], [np.zeros_like(e[0]), e[0]], out, ctx)


def _exact(node, v, e, out, ctx):
    """Neg, Abs: no rounding, Lipschitz 1: the error passes through."""
    return [e[0]]


def _max_min(node, v, e, out, ctx):
    """Elementwise Max/Min of several tensors: Lipschitz 1 in each, no rounding."""
    return [np.broadcast_to(np.maximum.reduce([np.broadcast_to(ei, out[0].shape) for ei in e]), out[0].shape)]


def _exp(node, v, e, out, ctx):
    carried = np.abs(out[0]) * np.expm1(2 * e[0])
    return [carried + EXP_ULP * U * (np.abs(out[0]) + carried) + TINY]


def _log(node, v, e, out, ctx):
    x, ex = v[0], e[0]
    lo = x - 2 * ex  # the smallest input in reach: |log a - log b| <= |a - b| / min(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        carried = np.where(lo > 0, ex / lo, np.inf)
    return [carried + LOG_ULP * U * (np.abs(out[0]) + carried) + LOG_ABS + TINY]


def _softmax(node, v, e, out, ctx):
    if ctx.opset < 13:
        raise NoRule  # before opset 13 Softmax flattens from its axis: not a per-row map here
    x, ex, y = v[0], e[0], out[0]
    axis = int(_attr(node, "axis", -1))
    k = x.shape[axis]
    E = np.max(ex, axis=axis, keepdims=True)
    shift = np.abs(x - np.max(x, axis=axis, keepdims=True)) + 2 * E
    rho = U * (shift + np.sum(y * shift, axis=axis, keepdims=True) + np.log(k) + EXP_ULP) + gamma(k)
    with np.errstate(over="ignore"):
        grown = np.expm1(2 * E)  # inf where the carried error says nothing
    return [y * grown + rho * y * (1 + grown) + TINY]


def _batchnorm(node, v, e, out, ctx):
    if len(node.output) > 1 and any(node.output[1:]) or _attr(node, "training_mode", 0):
        raise NoRule  # training-mode statistics are not an affine map of fixed constants
    x, ex = v[0], e[0]
    if any(np.any(ei) for ei in e[1:5]):
        raise NoRule  # statistics that carry error: not a map by exact constants
    scale, bias, mean, var = v[1:5]
    eps = float(_attr(node, "epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (scale / np.sqrt(var + np.float64(np.float32(eps)))).reshape(shape)
    m, b = mean.reshape(shape), bias.reshape(shape)
    return [np.abs(a) * ex + gamma(8) * (np.abs(a) * (_hat(x, ex) + np.abs(m)) + np.abs(b)) + 8 * TINY]


def _moves(node, v, e, out, ctx):
    """Data movement: the same op applied to the errors (integer inputs such as shapes kept)."""
    ins = [ei if ei is not None and vi is not None and vi.dtype.kind == "f" else vi for vi, ei in zip(v, e)]
    return [ctx.rerun(node, ins, k) if out[k] is not None and out[k].dtype.kind == "f" else None
            for k in range(len(node.output))]


def _identity(node, v, e, out, ctx):
    return [e[0]]


def _cast(node, v, e, out, ctx):
    to = int(_attr(node, "to"))
    src = ctx.types.get(node.input[0])
    widening = {(TensorProto.FLOAT16, TensorProto.FLOAT), (TensorProto.BFLOAT16, TensorProto.FLOAT),
                (TensorProto.FLOAT, TensorProto.FLOAT), (TensorProto.FLOAT, TensorProto.DOUBLE),
                (TensorProto.FLOAT16, TensorProto.DOUBLE), (TensorProto.DOUBLE, TensorProto.DOUBLE)}
    if (src, to) in widening:
        return [e[0]]
    if src not in FLOATS and to == TensorProto.FLOAT and np.all(np.abs(v[0]) <= 2**24):
        return [np.zeros(out[0].shape)]  # integers up to 2^24 are exact in float32
    if src not in FLOATS and to not in FLOATS:
        return [None]  # integer to integer (shapes, indices): exact data, no float error
    raise NoRule


def _shape_only(node, v, e, out, ctx):
    return [np.zeros(o.shape) if o is not None and o.dtype.kind == "f" else None for o in out]


RULES: dict[str, Rule] = {
    "MatMul": _matmul, "Gemm": _gemm, "Conv": _conv,
    "Add": _add, "Sub": _add, "Mul": _mul, "Div": _div,
    "Relu": _relu, "LeakyRelu": _leaky, "Clip": _clip, "Tanh": _tanh, "Sigmoid": _sigmoid,
    "MaxPool": _maxpool, "AveragePool": _avgpool, "GlobalAveragePool": _global_avg,
    "GlobalMaxPool": _maxpool, "ReduceMean": _reduce_mean, "ReduceSum": _reduce_sum,
    "ReduceMax": _reduce_max, "ReduceMin": _reduce_max,
    "BatchNormalization": _batchnorm, "Sqrt": _sqrt, "Reciprocal": _reciprocal, "Neg": _exact, "Abs": _exact,
    "Max": _max_min, "Min": _max_min, "Exp": _exp, "Log": _log, "Softmax": _softmax,
    "Identity": _identity, "Dropout": _identity,
    **{op: _moves for op in ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice",
                             "Gather", "Pad", "Expand", "Tile", "Split")},
    "Cast": _cast, "Shape": _shape_only, "Size": _shape_only, "Constant": _shape_only,
    "ConstantOfShape": _shape_only,
}


def _seed(name: str, value: np.ndarray, kind: int) -> np.ndarray | None:
    if kind not in FLOATS:
        return None
    if name.startswith(FOLDED):
        return FOLDED_ERROR * np.abs(value)
    return np.zeros(value.shape)


def propagate(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], oracle: GraphOracle | None = None,
              input_errors: dict[str, np.ndarray] | None = None) -> GraphBounds:
    """Oracle values and rounding bounds of every tensor of `proto` on `feeds` (see the module docstring).
    Graph inputs are exact unless `input_errors` gives a bound on how far an evaluation's input may be
    from the fed value (a float input)."""
    oracle = oracle or GraphOracle(proto)
    values = oracle.values(feeds)
    types = _elem_types(proto)
    ctx = _Ctx(proto, next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0), types, {})
    bounds: dict[str, np.ndarray] = {}
    rules: dict[str, str] = {}
    exact_ints: set[str] = set()
    order: list[str] = []
    for t in proto.graph.initializer:
        kind = t.data_type
        b = _seed(t.name, values[t.name], kind)
        order.append(t.name)
        if b is None:
            exact_ints.add(t.name)
        else:
            bounds[t.name] = b
        rules[t.name] = "bound"
    for i in proto.graph.input:
        if i.name in rules:
            continue
        order.append(i.name)
        rules[i.name] = "bound"
        if i.type.tensor_type.elem_type in FLOATS:
            seed = (input_errors or {}).get(i.name)
            bounds[i.name] = (np.zeros(np.shape(values[i.name])) if seed is None
                              else np.broadcast_to(np.asarray(seed, np.float64), np.shape(values[i.name])))
        else:
            exact_ints.add(i.name)
    for node in proto.graph.node:
        outs = [o for o in node.output if o]
        order += outs
        cause = next((rules[i] for i in node.input if i and rules.get(i, "bound") != "bound"), None)
        missing = next((i for i in node.input if i and i not in bounds and i not in exact_ints), None)
        if cause is None and missing is not None:
            cause = f"fallback (no value for {missing!r})"
        if cause is None:
            v = [values.get(i) if i else None for i in node.input]
            e = [bounds.get(i) if i else None for i in node.input]
            out = [values.get(o) if o else None for o in node.output]
            rule = RULES.get(node.op_type)
            float_out = any(o is not None and o.dtype.kind == "f" for o in out)
            try:
                if (rule is None or not float_out) and node.op_type not in ("Shape", "Size"):
                    if float_out or any(np.any(ei) for ei in e if ei is not None):
                        raise NoRule
                    result = [None] * len(out)  # an integer/bool op (shape arithmetic) on exact inputs is exact
                else:
                    result = rule(node, v, e, out, ctx)
            except NoRule:
                cause = f"fallback ({node.op_type} {node.name})"
        if cause is not None:
            for o in outs:
                rules[o] = cause
            continue
        for o, b, val in zip(node.output, result, out):
            if not o:
                continue
            rules[o] = "bound"
            if b is None or val is None or val.dtype.kind != "f":
                exact_ints.add(o)
            else:
                bounds[o] = np.ascontiguousarray(np.broadcast_to(b, val.shape), np.float64)
    for name in bounds:
        bounds[name] = bounds[name] * ORACLE_WIDEN
    return GraphBounds(values, bounds, rules, order)


def subgraph(proto: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The part of `proto` computing `outputs` from the tensors `inputs` (made graph inputs) and the
    weights: the nodes on a path back from an output that stops at the given inputs."""
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output if o}
    types = _elem_types(proto)
    keep, stack, seen = set(), list(outputs), set(inputs)
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            seen.add(t)
            continue
        seen.add(t)
        node = producer[t]
        keep.add(id(node))
        stack += [i for i in node.input if i]
    nodes = [n for n in g.node if id(n) in keep]
    used = {i for n in nodes for i in n.input} | set(outputs)
    inits = [t for t in g.initializer if t.name in used and t.name not in inputs]
    graph_inputs = [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None) for name in inputs]
    graph_inputs += [i for i in g.input if i.name in used and i.name not in inputs]
    outs = [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT), None) for name in outputs]
    sub = helper.make_graph(nodes, f"{g.name}_part", graph_inputs, outs, initializer=inits)
    return helper.make_model(sub, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)


def local(proto: onnx.ModelProto, observed: dict[str, np.ndarray], outputs: list[str],
          errors: dict[str, np.ndarray] | None = None) -> GraphBounds:
    """Bounds of `outputs` computed from the *observed* values of some upstream tensors, taken as
    exact: what one stage's own rounding can explain, without the error carried in from before.
    With `errors` (per observed tensor), the bound also covers any evaluation whose inputs lie within
    those errors of the observed values (another runtime's values of the same tensors)."""
    return propagate(subgraph(proto, list(observed), outputs), observed, input_errors=errors)
