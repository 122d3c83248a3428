"""Batched kernels behind :mod:`vlmkit.perturb.corruptions` (ImageNet-C, Hendrycks & Dietterich 2019).

Every function here works on whole batches (CPU and CUDA) with torch ops, except the two whose reference is a
C library: the JPEG round trip calls libjpeg as the reference does (Pillow's encoder; torchvision's
libjpeg-turbo decoder or Pillow's), and on CPU pixelate and the JPEG byte packing run compiled loops
(:mod:`.native`, numba) that do Pillow's integer arithmetic in one pass per image plane. The
functions whose name ends in ``_apply`` take their random fields as arguments, so that tests can feed them
the exact draws of the reference implementation (``imagecorruptions``) and check the deterministic part.

On CPU the kernels walk large batches a few images at a time (:data:`~vlmkit.perturb.kernels.common.CHUNK_ELEMS`)
and write into one result allocated up front (:func:`~vlmkit.perturb.kernels.common.new_output`): a fresh
batch-sized temporary per step costs more in page faults than most of these computations.

Layout, one module per family of the benchmark plus the shared primitives: :mod:`.common` (output
allocation and chunking, padding, separable / tap filters, FFT lengths, colour conversions), :mod:`.noise`,
:mod:`.blur` (gaussian, defocus, motion, zoom, glass), :mod:`.weather` (snow, frost, fog, spatter) and
:mod:`.digital` (elastic, pixelate, JPEG), with :mod:`.native` (its compiled CPU loops). Import the
sub-module you need; this package re-exports nothing.
"""
