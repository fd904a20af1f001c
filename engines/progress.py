"""Progress of one MusicGen generation across its windows (long form, continuation).

audiocraft generates at most one window (30 s) per pass; a longer output slides
``extend_stride`` seconds at a time and re-generates the overlap as the next window's prompt.
Its progress callback reports ``(generated, to_generate)`` per pass, with ``generated`` offset
by the stride: the raw ratio steps back at every new window and stalls for the whole last one.
``WindowProgress`` plans the passes exactly as audiocraft's loop does and turns the callback
into one fraction of all new tokens that rises steadily, window by window, to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def window_token_counts(total_frames: int, window_frames: int, stride_frames: int,
                        prompt_frames: int = 0) -> list[int]:
    """New tokens of each pass (audiocraft's ``_generate_tokens`` loop): one entry for an
    output within one window, one per window beyond it. ``prompt_frames`` is a continuation
    prompt's length, re-used and not generated."""
    if total_frames <= window_frames:
        return [max(1, total_frames - prompt_frames)]
    counts: list[int] = []
    offset, prompt = 0, prompt_frames
    while offset + prompt < total_frames:
        chunk = min(total_frames - offset, window_frames)
        counts.append(max(1, chunk - prompt))
        prompt = max(0, chunk - stride_frames)
        offset += stride_frames
    return counts or [1]


@dataclass
class WindowProgress:
    """Feeds on audiocraft's ``(generated, to_generate)`` callback; ``fraction`` is monotonic."""

    counts: list[int]
    window: int = 0
    _done_before: int = 0  # new tokens of the finished windows
    _base: int | None = None  # ``generated`` offset of the current window
    _last: int = 0
    _last_to_generate: int = 0
    fraction: float = field(default=0.0)

    def update(self, generated: int, to_generate: int) -> float:
        """The fraction done after this callback."""
        if self._base is None:
            self._base = generated - 1
        elif generated <= self._last or to_generate != self._last_to_generate:
            # A new pass started (the count restarts, or the pass length changed).
            self._done_before += self.counts[min(self.window, len(self.counts) - 1)]
            self.window += 1
            self._base = generated - 1
        self._last, self._last_to_generate = generated, to_generate
        current = self.counts[min(self.window, len(self.counts) - 1)]
        # The delay pattern adds (codebooks - 1) steps per pass: clamp to the window.
        in_window = min(generated - self._base, current)
        total = sum(self.counts)
        self.fraction = max(self.fraction, min(1.0, (self._done_before + in_window) / total))
        return self.fraction
