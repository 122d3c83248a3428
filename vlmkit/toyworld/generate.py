"""The renderer as a text-to-image generator: :func:`render` draws a scene for a prompt of the grammar."""

from __future__ import annotations

import numpy as np

from .grammar import parse_prompt
from .world import (
    BACKGROUNDS,
    POSITION_NAMES,
    Scene,
    SceneSpec,
    WorldConfig,
    render_spec,
    sample_object,
    sample_sign,
    sign_center,
)


def render(prompt: str, seed: int = 0, size: int = 64, config: WorldConfig = WorldConfig()) -> Scene:
    """Draw a scene matching ``prompt``.

    Attributes the prompt names (shape, colour, size, position, background, the word on a sign, a
    blank sign) are honoured; the rest are drawn at random from ``seed``.

    Args:
        prompt: A caption of the grammar, e.g. ``'a large red star on the left, and a sign that says
            "cat"'`` or ``'a photo of a heart'``.
        seed: Seed for the unspecified attributes.
        size: Image side in pixels.
        config: Fonts used for the sign.

    Returns:
        The rendered :class:`~vlmkit.toyworld.world.Scene`.

    Raises:
        ValueError: The prompt names no object, no word and no sign.
    """
    parsed = parse_prompt(prompt)
    if not parsed.objects and parsed.word is None and not parsed.blank_sign:
        raise ValueError(
            f"prompt {prompt!r} names no shape, no written word and no sign; "
            "try e.g. 'a red star' or 'a sign that says \"cat\"'"
        )
    rng = np.random.default_rng([int(seed), 0x7E47])
    taken = {o["position"] for o in parsed.objects if "position" in o}
    free = [p for p in rng.permutation(list(POSITION_NAMES)) if p not in taken]
    objects = []
    for o in parsed.objects:
        pos = o.get("position") or (free.pop(0) if free else POSITION_NAMES[rng.integers(len(POSITION_NAMES))])
        objects.append(sample_object(rng, pos, **{k: v for k, v in o.items() if k != "position"}))
    background = parsed.background or BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    sign = None
    if parsed.word is not None or parsed.blank_sign:
        sign = sample_sign(rng, parsed.word, config.fonts, center=sign_center(rng, [o.position for o in objects]))
    kind = "prompt"
    spec = SceneSpec(tuple(objects), background, int(rng.integers(2**31)), sign, kind=kind)
    return render_spec(spec, size)
