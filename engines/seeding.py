"""Per-request random streams inside one audiocraft batch.

audiocraft samples every next token of a batch with one call to
``audiocraft.utils.utils.multinomial`` on the global torch RNG, so an item's audio depends on
which other items share its batch. ``install()`` replaces that function (once per process) with
one that, while ``item_generators(...)`` is active on the calling thread, draws each batch item's
noise from that item's own ``torch.Generator``. Sampling uses the exponential race
(argmax p_i / E_i with E_i ~ Exp(1)), which samples exactly from p and consumes a fixed amount of
randomness per step, so item *i* gets the same tokens alone or in any batch.
Outside ``item_generators`` the original function runs unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from musicfn.errors import EngineError

_state = threading.local()
_install_lock = threading.Lock()
_original: Any = None


def install() -> None:
    """Route audiocraft's sampling through per-item generators (idempotent)."""
    global _original
    from audiocraft.utils import utils as ac_utils

    with _install_lock:
        if _original is not None:
            return
        _original = ac_utils.multinomial
        ac_utils.multinomial = _multinomial


@contextmanager
def item_generators(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Within this block (this thread only), batch item *i* samples from ``generators[i]``."""
    previous = getattr(_state, "generators", None)
    _state.generators = list(generators)
    try:
        yield
    finally:
        _state.generators = previous


def _multinomial(
    input: torch.Tensor,
    num_samples: int,
    replacement: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    generators: list[torch.Generator] | None = getattr(_state, "generators", None)
    if generators is None:
        return _original(input, num_samples, replacement, generator=generator)  # type: ignore[no-any-return]
    batch = input.shape[0]
    if num_samples != 1 or batch != len(generators):
        raise EngineError(
            f"seeded sampling expected {len(generators)} batch items drawing 1 sample, "
            f"got shape {tuple(input.shape)} drawing {num_samples}",
            code="sampling_mismatch",
        )
    card = input.shape[-1]
    probs = input.reshape(batch, -1, card).float()
    noise = torch.stack(
        [
            torch.empty(probs.shape[1:], dtype=torch.float32, device=probs.device).exponential_(
                generator=g
            )
            for g in generators
        ]
    )
    choice = torch.argmax(probs / noise, dim=-1, keepdim=True)
    return choice.reshape(*input.shape[:-1], 1)
