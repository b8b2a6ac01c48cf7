"""Backend registry for the fused ops.

Each op (masked_attention, masked_residual_layernorm) has implementations registered by backend name.
backend="auto" takes the first registered backend, in AUTO_ORDER, that `prefers` the given tensors; an
explicit name must be registered and `support` them, or one ValueError says what is available. The two
differ where a backend can run but should not be picked by itself: Triton kernels run on CPU tensors
under TRITON_INTERPRET=1 (for tests), far too slowly for "auto". A backend registered
`only_with_mask_grad` is auto's pick only for calls that need the mask gradient (or probe): the fused
attention kernel earns its place there, while a call without one is served faster by the vendor kernels
(SDPA flash / cuDNN behind the torch backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

BACKENDS = ("triton", "cuda", "cpp", "torch")
AUTO_ORDER = BACKENDS  # fastest first; torch always supports everything


def check_backend_name(backend: str, option: str = "backend") -> str:
    """`backend` if it names one ("auto" or a backend of BACKENDS), else one ValueError naming `option` (the
    argument, or the CLI flag) and what is allowed."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"{option} {backend!r} is unknown; allowed: 'auto' or one of {BACKENDS}")
    return backend


@dataclass(frozen=True)
class _Impl:
    fn: Callable
    supports: Callable[..., bool]
    prefers: Callable[..., bool]
    features: frozenset = frozenset()  # optional arguments it serves (e.g. attn_bias, window)
    only_with_mask_grad: bool = False  # auto picks it only for calls that need a mask gradient


_registry: dict[str, dict[str, _Impl]] = {}


def _always(*tensors, **kwargs) -> bool:
    return True


def register(op: str, backend: str, fn: Callable, supports: Callable[..., bool] = _always,
             prefers: Callable[..., bool] | None = None, features=(), only_with_mask_grad: bool = False) -> None:
    """Registers `fn` as `op`'s implementation on `backend`: `supports(*tensors)` says where it can run,
    `prefers(*tensors)` (default: supports) where "auto" picks it, `features` which optional arguments
    of the op it serves (a call using another one skips this backend), `only_with_mask_grad` that auto
    picks it only for calls needing a mask gradient."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    _registry.setdefault(op, {})[backend] = _Impl(fn, supports, prefers or supports, frozenset(features),
                                                  bool(only_with_mask_grad))


def available(op: str) -> tuple[str, ...]:
    """Backends registered for `op`, in auto order."""
    return tuple(b for b in AUTO_ORDER if b in _registry.get(op, {}))


def resolve(op: str, backend: str, *tensors, features=(), mask_grad: bool = True) -> Callable:
    """The implementation of `op` that `backend` names for these tensors (None entries are skipped);
    `features`: the optional arguments this call uses (names), which the backend must serve; `mask_grad`:
    whether the call needs the mask gradient (auto's rule for backends registered only_with_mask_grad)."""
    impls = _registry.get(op, {})
    needed = frozenset(features)
    tensors = tuple(t for t in tensors if t is not None)
    if backend == "auto":
        for name in AUTO_ORDER:
            impl = impls.get(name)
            if impl is None or not needed <= impl.features or (impl.only_with_mask_grad and not mask_grad):
                continue
            if impl.prefers(*tensors):
                return impl.fn
        raise ValueError(f"no backend of {op} supports these inputs; registered: {available(op)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is unknown; allowed: 'auto' or one of {BACKENDS}")
    impl = impls.get(backend)
    if impl is None:
        raise ValueError(f"backend {backend!r} is not available for {op} here; available: {available(op)}")
    missing = sorted(needed - impl.features)
    if missing:
        serving = [b for b in available(op) if needed <= impls[b].features]
        raise ValueError(f"backend {backend!r} of {op} does not serve {', '.join(missing)}; backends that do: {serving}")
    if not impl.supports(*tensors):
        seen = sorted({f"{t.dtype} on {t.device}" for t in tensors if t is not None})
        raise ValueError(f"backend {backend!r} of {op} does not support {', '.join(seen)}; available: {available(op)}")
    return impl.fn
