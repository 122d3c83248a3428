"""Load the reference ``imagecorruptions`` 1.1.2 under current NumPy / scikit-image (tests and benchmarks only).

Shims: ``np.float_`` (removed in NumPy 2, used by ``fog``) and ``skimage.filters.gaussian(multichannel=True)``
(removed from scikit-image; mapped to ``channel_axis=-1``; used by ``gaussian_blur`` and ``glass_blur``).
``pkg_resources`` needs setuptools<81 (a dev dependency).
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any


def load_imagecorruptions() -> ModuleType:
    """Return ``imagecorruptions.corruptions`` after shimming (raises ImportError if it is not installed)."""
    import numpy as np

    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions.corruptions as ref
    import skimage.filters

    real = skimage.filters.gaussian
    if not getattr(ref.gaussian, "_vlmkit_shim", False):
        def gaussian(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return real(image, *args, **kwargs)

        gaussian._vlmkit_shim = True  # type: ignore[attr-defined]
        ref.gaussian = gaussian
    return ref
