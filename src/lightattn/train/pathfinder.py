"""A generator of the Pathfinder task (Linsley et al. 2018) at the size of the Long Range Arena's
Pathfinder-32 (Tay et al. 2021), written from the task's description; numpy only.

An image is 32x32 grayscale, 0 or 255. Two "target" snakes start `seed_distance` (5) pixels
apart; each is a dashed curve of `contour_length` paddles (6 easy, 9 intermediate, 14 hard): a
paddle is a straight stroke of length `paddle_length` (2, so 3 pixels), consecutive paddles are
`margin` (1) empty pixels apart, and each turn between paddles is drawn with weight
cos(min(|turn| * continuity, 90 deg))^2, the rule of the original generator (there sampled on a
circle, here over 16 directions; `continuity` 1.0 rather than its 1.8 so that 14 paddles fit in
32 pixels). `num_distractors` (5) shorter snakes of contour_length // 3 paddles are then put in
the space left (one that does not fit whole is kept shorter, as long as one paddle fits). Two 3x3
markers sit on target ends: label 1 when they are the two ends of one target, 0 when one is the
start of one target and the other the end of the other; marker spots are reserved at all four
target ends whatever the label. Labels come in balanced pairs.

Every snake keeps `margin` empty pixels from every other snake and from the marker spots, so no
two pixels of different snakes are 8-adjacent: the 8-connected components of the union of the
snakes' solid masks (paddles plus the gaps between them; `PathfinderSample.paths`) are exactly
the snakes, and a flood fill from one marker reaches the other iff the label is 1, which is the
oracle the tests check.

Geometry is on the pixel grid: the 16 directions are the points of a Chebyshev circle, so paddles
and gaps are 8-connected pixel runs. Image `i` of the set with seed `s` is drawn from
``numpy.random.default_rng([s, contour_length, 0, i])`` (its label from
``default_rng([s, contour_length, 1, i // 2])``), so any image can be regenerated alone; past
the tables only integer arithmetic and exact float-to-integer draws decide anything, so a seed
gives the same bytes on every machine. Growing a snake backs up a few paddles at a dead end and
starts over when that fails; the first target starts at least `start_border` pixels inside.

Speed on this 2-core machine, one process: about 1,000 images/s at contour length 6, 650 at 9 and
290 at 14 (`measure_speed`); `generate_pathfinder` uses one spawned process per core for 4,000
images or more, so 20,000 hard images take about 40 s. `load_pathfinder` caches sets as .npz.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

__all__ = [
    "DIFFICULTY",
    "GENERATOR_VERSION",
    "PathfinderConfig",
    "PathfinderSample",
    "PathfinderSet",
    "cache_path",
    "default_cache_dir",
    "generate_image",
    "generate_pathfinder",
    "load_pathfinder",
    "measure_speed",
]

# Bump when the drawing changes: it is part of the cache key.
GENERATOR_VERSION = 1
DIFFICULTY = {6: "easy", 9: "intermediate", 14: "hard"}
_TARGET_TRIES = 200
_DISTRACTOR_TRIES = 4
_SECOND_TRIES = 3
_PARALLEL_MIN = 4000
_CHUNK = 1000


@dataclass(frozen=True)
class PathfinderConfig:
    """Every parameter that shapes an image (all of them are part of the cache key).

    `distractor_length` None means contour_length // 3 (at least 1), as in the original
    generator; `seed_distance` is the distance in pixels between the two targets' starts;
    `padding` keeps that many border pixels free of paddles."""

    contour_length: int = 14
    image_size: int = 32
    paddle_length: int = 2
    margin: int = 1
    num_distractors: int = 5
    distractor_length: int | None = None
    continuity: float = 1.0
    marker_radius: int = 1
    seed_distance: int = 5
    padding: int = 1
    start_border: int = 6
    num_directions: int = 16

    def __post_init__(self) -> None:
        for name in ("contour_length", "image_size", "paddle_length", "margin", "num_directions"):
            if getattr(self, name) < 1:
                raise ValueError(f"PathfinderConfig.{name} must be >= 1")
        if self.num_distractors < 0 or self.marker_radius < 0:
            raise ValueError("PathfinderConfig: num_distractors and marker_radius must be >= 0")
        if self.padding < self.marker_radius:
            raise ValueError("PathfinderConfig.padding must be >= marker_radius")
        if not self.padding <= self.start_border < self.image_size // 2:
            raise ValueError("PathfinderConfig.start_border must be in [padding, image_size / 2)")
        if self.seed_distance < 2 * self.marker_radius + self.margin + 1:
            raise ValueError("PathfinderConfig.seed_distance leaves no room between the markers")

    @property
    def distractor_paddles(self) -> int:
        """Paddles per distractor snake."""
        if self.distractor_length is not None:
            return self.distractor_length
        return max(1, self.contour_length // 3)

    @property
    def difficulty(self) -> str:
        """LRA's name for the contour length ("easy"/"intermediate"/"hard") or "custom"."""
        return DIFFICULTY.get(self.contour_length, "custom")


@dataclass
class PathfinderSample:
    """One image: `image` (H, W) uint8, `label` 0/1, `paths` (H, W) uint8 snake ids (0
    background, 1 and 2 the targets, 3.. the distractors; gap pixels between paddles and the
    marker squares belong to their snake), `markers` (2, 2) int16 (row, col) centres."""

    image: np.ndarray
    label: int
    paths: np.ndarray
    markers: np.ndarray


@dataclass
class PathfinderSet:
    """A generated set: images (N, H, W) uint8, labels (N,) int64, paths (N, H, W) uint8,
    markers (N, 2, 2) int16, and the config and seed that made it (image i used index
    ``start + i``)."""

    images: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    markers: np.ndarray
    config: PathfinderConfig = field(default_factory=PathfinderConfig)
    seed: int = 0
    start: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# ----------------------------------------------------------------------------------------------
# Tables: flat offsets on a padded grid, built once per config. The drawing below is plain
# Python on these tuples and on bytearrays: at a few pixels per step that beats numpy calls.
# Everything about how a paddle sits next to the previous one is a function of the two
# directions only, so it is worked out here once.

_Vec = tuple[int, int]


@dataclass(frozen=True)
class _Tables:
    side: int  # padded grid side
    frame: int  # padding of the grid around the image
    first: tuple[tuple[int, ...], ...]  # per direction: pixels of a paddle from its start
    first_end: tuple[int, ...]  # per direction: end of a paddle from its start
    gap: tuple[tuple[int, ...], ...]  # per direction: gap pixels from the previous end
    paddle: tuple[tuple[int, ...], ...]  # per direction: next paddle's pixels from that end
    reach: tuple[tuple[int, ...], ...]  # per direction: gap and paddle pixels together
    end: tuple[int, ...]  # per direction: next paddle's end from the previous end
    turns: tuple[tuple[tuple[int, int], ...], ...]  # per last direction: (next, weight)
    last_turns: tuple[tuple[tuple[int, int], ...], ...]  # same, leaving room for a marker
    back_halo: tuple[tuple[int, ...], ...]  # per direction: halo of the paddle ending at 0
    gap_halo: tuple[tuple[int, ...], ...]  # per direction: halo of the gap after 0
    seeds: tuple[int, ...]  # second target's start relative to the first's
    blob: tuple[int, ...]  # marker pixels around a centre
    halo: tuple[int, ...]  # box of radius margin (dilation)
    frame_mask: bytes  # 1 where paddles may not go (outside the image less `padding`)
    centre: tuple[int, ...]  # where the first target may start


def _steps(cfg: PathfinderConfig, radius: int) -> list[_Vec]:
    """Integer (dy, dx) steps of Chebyshev length `radius` in each of the K directions."""
    ang = 2.0 * np.pi * np.arange(cfg.num_directions) / cfg.num_directions
    unit = np.stack([np.sin(ang), np.cos(ang)], axis=1)
    unit /= np.abs(unit).max(axis=1, keepdims=True)
    return [(int(y), int(x)) for y, x in np.rint(unit * radius)]


def _add(a: _Vec, b: _Vec) -> _Vec:
    return a[0] + b[0], a[1] + b[1]


def _apart(a: list[_Vec], b: list[_Vec], margin: int) -> bool:
    """Whether every pixel of `a` is more than `margin` (Chebyshev) from every pixel of `b`."""
    return all(max(abs(p[0] - q[0]), abs(p[1] - q[1])) > margin for p in a for q in b)


def _disk(radius: int) -> list[_Vec]:
    """Marker pixels: a disk of radius + 0.5 (a 3x3 square at radius 1)."""
    r = range(-radius, radius + 1)
    return [(y, x) for y in r for x in r if 4 * (y * y + x * x) <= (2 * radius + 1) ** 2]


def _box(radius: int) -> list[_Vec]:
    r = range(-radius, radius + 1)
    return [(y, x) for y in r for x in r]


def _ring(cfg: PathfinderConfig) -> list[_Vec]:
    """Steps of Euclidean length `seed_distance` (+-0.5, integer test) that keep the two
    targets' marker spots `margin` pixels apart."""
    r, need = cfg.seed_distance, 2 * cfg.marker_radius + cfg.margin + 1
    span = range(-r - 1, r + 2)
    return [
        (y, x)
        for y in span
        for x in span
        if (2 * r - 1) ** 2 <= 4 * (y * y + x * x) < (2 * r + 1) ** 2
        and max(abs(y), abs(x)) >= need
    ]


def _turn_weights(cfg: PathfinderConfig) -> list[tuple[int, int]]:
    """(direction change, integer weight): cos(min(|turn| * continuity, 90 deg))^2."""
    k, out = cfg.num_directions, []
    for turn in range(-(k // 4), k // 4 + 1):
        angle = min(abs(turn) * 2 * math.pi / k * cfg.continuity, math.pi / 2)
        weight = round(1000 * math.cos(angle) ** 2)
        if weight > 0:
            out.append((turn, weight))
    return out


def _square(side: int, lo: int, hi: int) -> np.ndarray:
    """(side, side) bool: rows and columns in [lo, hi)."""
    rows = np.arange(side)
    inside = (rows >= lo) & (rows < hi)
    return inside[:, None] & inside[None, :]


@lru_cache(maxsize=16)
def _tables(cfg: PathfinderConfig) -> _Tables:
    """Precompute every offset table of `cfg` (cached per config)."""
    size, length, m, k = cfg.image_size, cfg.paddle_length, cfg.margin, cfg.num_directions
    frame = max(2 * (length + m + 1), cfg.seed_distance) + cfg.marker_radius + m + 1
    side = size + 2 * frame

    def flat(vecs: list[_Vec]) -> tuple[int, ...]:
        return tuple(sorted({y * side + x for y, x in vecs}))

    def halo(vecs: list[_Vec]) -> tuple[int, ...]:
        return flat([_add(v, h) for v in vecs for h in _box(m)])

    runs = [_steps(cfg, t) for t in range(length + 1)]
    first = [[run[d] for run in runs] for d in range(k)]  # pixels from a paddle's start
    jump, blob = _steps(cfg, m + 1), _disk(cfg.marker_radius)
    gaps = [[_steps(cfg, t)[d] for t in range(1, m + 1)] for d in range(k)]
    nxt = [[_add(jump[d], p) for p in first[d]] for d in range(k)]  # from the previous end
    ends = [nxt[d][-1] for d in range(k)]
    back = [[_add(p, (-first[d][-1][0], -first[d][-1][1])) for p in first[d]] for d in range(k)]
    turns, last_turns = [], []
    for d in range(k):
        fits = [((d + t) % k, w) for t, w in _turn_weights(cfg)]
        fits = [(n, w) for n, w in fits if _apart(back[d], nxt[n], m)]
        turns.append(tuple(fits))
        room = [(n, w) for n, w in fits if _apart(back[d], [_add(ends[n], b) for b in blob], m)]
        last_turns.append(tuple(room))
    return _Tables(
        side=side,
        frame=frame,
        first=tuple(flat(p) for p in first),
        first_end=tuple(flat([p[-1]])[0] for p in first),
        gap=tuple(flat(g) for g in gaps),
        paddle=tuple(flat(p) for p in nxt),
        reach=tuple(flat(g + p) for g, p in zip(gaps, nxt, strict=True)),
        end=tuple(flat([e])[0] for e in ends),
        turns=tuple(turns),
        last_turns=tuple(last_turns),
        back_halo=tuple(halo(b) for b in back),
        gap_halo=tuple(halo(g) for g in gaps),
        seeds=flat(_ring(cfg)),
        blob=flat(blob),
        halo=flat(_box(m)),
        frame_mask=(~_square(side, frame + cfg.padding, frame + size - cfg.padding))
        .astype(np.uint8)
        .tobytes(),
        centre=tuple(
            int(i)
            for i in np.flatnonzero(
                _square(side, frame + cfg.start_border, frame + size - cfg.start_border)
            )
        ),
    )


# ----------------------------------------------------------------------------------------------
# Drawing one image.


class _Draws:
    """Uniform integers from a numpy Generator, fetched 256 floats at a time (one Generator call
    per draw would dominate the run time). ``below(n)`` is floor(u * n): exact IEEE
    arithmetic, so the same on every machine."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[float] = []

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        if not self._buf:
            self._buf = self._rng.random(256).tolist()[::-1]
        return min(int(self._buf.pop() * n), n - 1)

    def pick(self, weights: list[int]) -> int:
        """An index drawn with probability proportional to the integer `weights`."""
        r = self.below(sum(weights))
        for i, w in enumerate(weights):
            r -= w
            if r < 0:
                return i
        raise AssertionError("unreachable")


@dataclass
class _Snake:
    """A growing snake: its paddles' and gaps' pixels and, per paddle, end and direction."""

    start: int
    paddles: list[list[int]] = field(default_factory=list)
    gaps: list[list[int]] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    dirs: list[int] = field(default_factory=list)

    def solid(self) -> list[int]:
        """Every pixel of the snake: paddles and the gaps between them."""
        return [p for part in self.paddles + self.gaps for p in part]

    def truncate(self, n: int) -> None:
        """Keep the first `n` paddles."""
        del self.paddles[n:], self.gaps[n - 1 :], self.ends[n:], self.dirs[n:]


def _mark(grid: bytearray, at: int, offsets: tuple[int, ...]) -> None:
    """Set `grid` to 1 at `at + offsets`."""
    for o in offsets:
        grid[at + o] = 1


def _mark_halo(grid: bytearray, pixels: list[int], t: _Tables) -> None:
    """Set `grid` to 1 within `margin` of `pixels`."""
    for p in pixels:
        _mark(grid, p, t.halo)


def _hits(grid: bytearray, at: int, offsets: tuple[int, ...]) -> bool:
    """Whether `grid` is set anywhere at `at + offsets`."""
    return any(map(grid.__getitem__, map(at.__add__, offsets)))


def _first_paddle(draws: _Draws, t: _Tables, start: int, forbid: bytearray) -> _Snake | None:
    """A snake of one paddle from `start` in a uniformly drawn free direction, or None."""
    free = [d for d, pix in enumerate(t.first) if not _hits(forbid, start, pix)]
    if not free:
        return None
    d = free[draws.below(len(free))]
    return _Snake(start, [[start + o for o in t.first[d]]], [], [start + t.first_end[d]], [d])


def _candidates(
    t: _Tables, snake: _Snake, forbid: bytearray, end_blob: bool
) -> tuple[list[int], list[int]]:
    """Directions the next paddle may take and their weights: the turn keeps the dash gap to
    the previous paddle (a table), its gap and paddle pixels are not forbidden, and with
    `end_blob` the marker square at its end is free too."""
    e, last = snake.ends[-1], snake.dirs[-1]
    dirs, weights = [], []
    for d, w in (t.last_turns if end_blob else t.turns)[last]:
        if _hits(forbid, e, t.reach[d]) or (end_blob and _hits(forbid, e + t.end[d], t.blob)):
            continue
        dirs.append(d)
        weights.append(w)
    return dirs, weights


def _grow(
    draws: _Draws,
    t: _Tables,
    start: int,
    paddles: int,
    blocked: bytearray,
    own: list[int],
    end_blob: bool,
    backtracks: int = 8,
    partial: bool = False,
) -> _Snake | None:
    """Grow a snake of `paddles` paddles from `start`, keeping off `blocked` (other snakes'
    halos and the frame) and off its own earlier paddles; the later paddles also keep off
    `own` (a marker spot at its start). With `end_blob` the marker square at its end must
    fit. At a dead end it backs up one to three paddles (at most `backtracks` times); when
    that does not get it out: None, or with `partial` the snake as far as it got."""
    snake = _first_paddle(draws, t, start, blocked)
    if snake is None:
        return None
    if paddles == 1:
        return None if end_blob and _hits(blocked, snake.ends[0], t.blob) else snake
    forbid = bytearray(blocked)
    for p in own:
        forbid[p] = 1
    saved = [forbid]  # saved[i]: what the paddle after paddle i keeps off
    while len(snake.paddles) < paddles:
        i = len(snake.paddles)
        dirs, weights = _candidates(t, snake, saved[-1], end_blob and i == paddles - 1)
        if not dirs:
            back = min(i - 1, 1 + draws.below(3))
            if backtracks == 0 or back == 0:
                return snake if partial else None
            backtracks -= 1
            snake.truncate(i - back)
            del saved[i - back :]
            continue
        d = dirs[draws.pick(weights)]
        e = snake.ends[-1]
        forbid = bytearray(saved[-1])
        _mark(forbid, e, t.back_halo[snake.dirs[-1]])
        _mark(forbid, e, t.gap_halo[d])
        saved.append(forbid)
        snake.gaps.append([e + o for o in t.gap[d]])
        snake.paddles.append([e + o for o in t.paddle[d]])
        snake.ends.append(e + t.end[d])
        snake.dirs.append(d)
    return snake


def _spots(t: _Tables, snake: _Snake) -> list[int]:
    """The snake's pixels plus the marker squares at both its ends."""
    ends = (snake.start, snake.ends[-1])
    return snake.solid() + [c + o for c in ends for o in t.blob]


def _targets(draws: _Draws, cfg: PathfinderConfig, t: _Tables) -> list[_Snake]:
    """The two target snakes: the first from a point at least `start_border` pixels inside,
    the second from a free point `seed_distance` from the first's start; marker spots are
    reserved at all four ends (so labels 0 and 1 look alike around every end)."""
    for _ in range(_TARGET_TRIES):
        a = t.centre[draws.below(len(t.centre))]
        snake_a = _grow(draws, t, a, cfg.contour_length, t.frame_mask, _halo_at(a, t), True)
        if snake_a is None:
            continue
        second = bytearray(t.frame_mask)
        _mark_halo(second, _spots(t, snake_a), t)
        starts = [a + o for o in t.seeds if not _hits(second, a + o, t.blob)]
        for _ in range(min(_SECOND_TRIES, len(starts))):
            b = starts[draws.below(len(starts))]
            snake_b = _grow(draws, t, b, cfg.contour_length, second, _halo_at(b, t), True)
            if snake_b is not None:
                return [snake_a, snake_b]
    raise RuntimeError(f"pathfinder: no room for two targets of {cfg.contour_length} paddles")


def _halo_at(centre: int, t: _Tables) -> list[int]:
    """Pixels within `margin` of the marker spot at `centre`."""
    return _halo([centre + o for o in t.blob], t)


def _halo(pixels: list[int], t: _Tables) -> list[int]:
    """Pixels within `margin` of `pixels`."""
    return [p + h for p in pixels for h in t.halo]


def _open_pixels(taken: bytearray, side: int, radius: int) -> np.ndarray:
    """Free pixels whose whole (2r+1)^2 box is free (all free pixels when none is)."""
    free = np.frombuffer(taken, dtype=np.uint8).reshape(side, side) == 0
    open_ = free.copy()
    for _ in range(radius):
        inner = open_[1:-1, 1:-1].copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                inner &= open_[1 + dy : side - 1 + dy, 1 + dx : side - 1 + dx]
        open_[1:-1, 1:-1] = inner
    found = np.flatnonzero(open_)
    return found if len(found) else np.flatnonzero(free)


def _distractors(
    draws: _Draws, cfg: PathfinderConfig, t: _Tables, taken: bytearray
) -> list[_Snake]:
    """`num_distractors` snakes of up to `distractor_paddles` paddles in the free space
    (`taken` is updated in place), each started in the open (2 pixels clear all round when
    there is such a place). Where the image is too full for the whole length, the longest of
    a few tries is kept (at least one paddle); one with no room even for that is left out."""
    out: list[_Snake] = []
    for _ in range(cfg.num_distractors):
        best: _Snake | None = None
        for _ in range(_DISTRACTOR_TRIES):
            free = _open_pixels(taken, t.side, 2)
            if len(free) == 0:
                break
            start = int(free[draws.below(len(free))])
            snake = _grow(draws, t, start, cfg.distractor_paddles, taken, [], False, 2, True)
            if snake is not None and (best is None or len(snake.paddles) > len(best.paddles)):
                best = snake
            if best is not None and len(best.paddles) == cfg.distractor_paddles:
                break
        if best is not None:
            _mark_halo(taken, best.solid(), t)
            out.append(best)
    return out


def _pair_label(cfg: PathfinderConfig, seed: int, index: int) -> int:
    """Label of image `index`: each pair (2p, 2p+1) holds one 0 and one 1."""
    flip = int(np.random.default_rng([seed, cfg.contour_length, 1, index // 2]).integers(2))
    return (index + flip) % 2


def generate_image(cfg: PathfinderConfig, seed: int, index: int) -> PathfinderSample:
    """Image `index` of the set with `seed`: deterministic, independent of every other image."""
    t = _tables(cfg)
    draws = _Draws(np.random.default_rng([seed, cfg.contour_length, 0, index]))
    label = _pair_label(cfg, seed, index)
    targets = _targets(draws, cfg, t)
    taken = bytearray(t.frame_mask)
    for snake in targets:
        _mark_halo(taken, _spots(t, snake), t)
    snakes = targets + _distractors(draws, cfg, t, taken)
    origin = draws.below(2)
    other = origin if label == 1 else 1 - origin
    marks = (targets[origin].start, targets[other].ends[-1])
    image = np.zeros(t.side * t.side, dtype=np.uint8)
    paths = np.zeros_like(image)
    for sid, snake in enumerate(snakes, start=1):
        paths[snake.solid()] = sid
        image[[p for pix in snake.paddles for p in pix]] = 255
    for centre, owner in zip(marks, (origin + 1, other + 1), strict=True):
        paths[[centre + o for o in t.blob]] = owner
        image[[centre + o for o in t.blob]] = 255
    crop = np.s_[t.frame : t.frame + cfg.image_size, t.frame : t.frame + cfg.image_size]
    markers = np.array([divmod(c, t.side) for c in marks], dtype=np.int16) - t.frame
    return PathfinderSample(
        image=image.reshape(t.side, t.side)[crop].copy(),
        label=label,
        paths=paths.reshape(t.side, t.side)[crop].copy(),
        markers=markers,
    )


# ----------------------------------------------------------------------------------------------
# Whole sets, in parallel and cached.


def _generate_range(cfg: PathfinderConfig, seed: int, start: int, count: int) -> PathfinderSet:
    """Images start .. start+count-1 in this process."""
    size = cfg.image_size
    out = PathfinderSet(
        images=np.zeros((count, size, size), dtype=np.uint8),
        labels=np.zeros(count, dtype=np.int64),
        paths=np.zeros((count, size, size), dtype=np.uint8),
        markers=np.zeros((count, 2, 2), dtype=np.int16),
        config=cfg,
        seed=seed,
        start=start,
    )
    for i in range(count):
        s = generate_image(cfg, seed, start + i)
        out.images[i], out.labels[i], out.paths[i], out.markers[i] = (
            s.image,
            s.label,
            s.paths,
            s.markers,
        )
    return out


def _chunks(start: int, count: int, size: int) -> Iterator[tuple[int, int]]:
    """(first index, count) of consecutive chunks of at most `size` images."""
    for lo in range(start, start + count, size):
        yield lo, min(size, start + count - lo)


def _concat(
    parts: list[PathfinderSet], cfg: PathfinderConfig, seed: int, start: int
) -> PathfinderSet:
    """One set from consecutive parts."""
    return PathfinderSet(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        paths=np.concatenate([p.paths for p in parts]),
        markers=np.concatenate([p.markers for p in parts]),
        config=cfg,
        seed=seed,
        start=start,
    )


def generate_pathfinder(
    count: int,
    config: PathfinderConfig | None = None,
    seed: int = 0,
    start: int = 0,
    workers: int | None = None,
) -> PathfinderSet:
    """Generate images start .. start+count-1 of the set `seed` (no cache). `workers` None:
    one process below 4,000 images, else one per CPU core, in spawned processes (the result
    is the same either way: every image has its own seed)."""
    cfg = config or PathfinderConfig()
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if workers is None:
        workers = 1 if count < _PARALLEL_MIN else max(1, os.cpu_count() or 1)
    if workers <= 1 or count <= _CHUNK:
        return _generate_range(cfg, seed, start, count)
    spans = list(_chunks(start, count, _CHUNK))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        parts = list(
            pool.map(_generate_range, *zip(*[(cfg, seed, lo, n) for lo, n in spans], strict=True))
        )
    return _concat(parts, cfg, seed, start)


def default_cache_dir() -> Path:
    """$LIGHTATTN_DATA/pathfinder if set, else ~/.cache/lightattn/pathfinder."""
    root = os.environ.get("LIGHTATTN_DATA")
    if root:
        return Path(root).expanduser() / "pathfinder"
    return Path.home() / ".cache" / "lightattn" / "pathfinder"


def cache_path(cache_dir: Path, count: int, cfg: PathfinderConfig, seed: int, start: int) -> Path:
    """File of a set under `cache_dir`, keyed by every parameter, the seed, the range and the
    generator version."""
    key = {"version": GENERATOR_VERSION, "count": count, "seed": seed, "start": start}
    key.update(asdict(cfg))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"pathfinder-cl{cfg.contour_length}-s{seed}-n{count}-{digest}.npz"
    return Path(cache_dir) / name


def _read_cache(
    path: Path, count: int, cfg: PathfinderConfig, seed: int, start: int
) -> PathfinderSet | None:
    """The cached set, or None when the file is missing, unreadable or does not match."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("images", "labels", "paths", "markers")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, pickle.PickleError):
        return None
    size = cfg.image_size
    shapes = {"images": (count, size, size), "labels": (count,), "paths": (count, size, size)}
    shapes["markers"] = (count, 2, 2)
    if any(arrays[k].shape != shape for k, shape in shapes.items()):
        return None
    return PathfinderSet(**arrays, config=cfg, seed=seed, start=start)


def _write_cache(path: Path, data: PathfinderSet) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f, images=data.images, labels=data.labels, paths=data.paths, markers=data.markers
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_pathfinder(
    count: int,
    config: PathfinderConfig | None = None,
    seed: int = 0,
    start: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> PathfinderSet:
    """`generate_pathfinder` through an on-disk cache (`.npz` under `cache_dir`, default
    `default_cache_dir()`): read when present and matching, else generated and written."""
    cfg = config or PathfinderConfig()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache_path(root, count, cfg, seed, start)
    cached = _read_cache(path, count, cfg, seed, start)
    if cached is not None:
        return cached
    data = generate_pathfinder(count, cfg, seed, start, workers)
    _write_cache(path, data)
    return data


def measure_speed(count: int = 2000, config: PathfinderConfig | None = None) -> float:
    """Images per second of one process generating `count` images."""
    t0 = time.perf_counter()
    generate_pathfinder(count, config, seed=12345, workers=1)
    return count / (time.perf_counter() - t0)
