"""The four terms of DVIS's variational loss (paper eq. 2-7), each a separate function.

Notation: ``z`` is the raw (pre-ReLU) output of the label FCN and ``f = ReLU(z)`` the instance
label map; ``ids`` is the ground-truth instance map (0 = background, k > 0 = instance k; only
equality of ids matters, so relabelling the instances leaves every term unchanged); ``valid``
marks the pixels inside the image (not batch padding). All maps are at the label-map resolution
(stride 4), shaped (B, H, W).
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def huber(v: torch.Tensor, theta: float = 0.1) -> torch.Tensor:
    """The paper's robust Huber function ``L_h(v) = v^2 / (2 theta)`` if ``v < theta``, else
    ``v - theta / 2`` (elementwise; ``v >= 0`` in every use)."""
    return torch.where(v < theta, v * v / (2 * theta), v - theta / 2)


def binary_loss(
    z: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    margin: float = 2.0,
    theta: float = 0.1,
) -> torch.Tensor:
    """Binary term L_b (eq. 3): ``L_h(ReLU(f))`` on background, ``L_h(ReLU(m1 - f))`` on
    instance pixels, averaged over the valid pixels with ``weights``.

    It is evaluated on the pre-ReLU output ``z``: on the background ``ReLU(z) = ReLU(ReLU(z))``
    and on instances the value equals the paper's whenever ``z >= 0``, while a negative ``z``
    on an instance still gets a gradient (the research code does the same).

    Args:
        z: (B, H, W) raw label FCN output.
        ids, valid: (B, H, W) instance ids (0 = background) and the valid-pixel mask.
        weights: (B, H, W) per-pixel weights, or None for uniform.
        margin: m1. theta: Huber threshold.

    Returns:
        scalar ``sum(w * L) / sum(w)`` over the valid pixels.
    """
    fg = ids > 0
    loss = torch.where(fg, huber(F.relu(margin - z), theta), huber(F.relu(z), theta))
    w = valid.to(z.dtype) if weights is None else weights * valid
    return (loss * w).sum() / w.sum().clamp(min=1e-6)


# The research code clamps |f(p1) - f(p2)| to [1e-8, 5] in its L_pi ("reference" pairs).
REFERENCE_DIFF_RANGE = (1e-8, 5.0)


def pair_loss(
    fa: torch.Tensor,
    fb: torch.Tensor,
    same: torch.Tensor,
    margin: float = 1.0,
    theta: float = 0.1,
    diff_weight: float = 1.0,
    diff_range: Optional[Tuple[float, float]] = None,
) -> torch.Tensor:
    """Permutation-invariant loss L_pi (eq. 4-5) of pixel pairs, averaged over the pairs.

    ``fd = |f(p1) - f(p2)|`` (clamped to ``diff_range`` if given); same instance: ``L_h(fd)``;
    different instances: ``diff_weight * L_h(ReLU(m2 - fd))``.

    Args:
        fa, fb: (P,) labels ``f = ReLU(z)`` of the two pixels of each pair.
        same: (P,) bool, whether the pair lies on one GT instance.
    """
    if fa.numel() == 0:
        return fa.sum() * 0.0
    fd = (fa - fb).abs()
    if diff_range is not None:
        fd = fd.clamp(*diff_range)
    loss = torch.where(same, huber(fd, theta), diff_weight * huber(F.relu(margin - fd), theta))
    return loss.mean()


def stratified_offsets(window: int, center: int, dilation: int) -> torch.Tensor:
    """Pair offsets of the paper's stratified sampling, one per unordered pair.

    Every offset ``(dy, dx)`` with ``max(|dy|, |dx|) <= window // 2`` that lies in the dense
    centre (``|dy| + |dx| <= center``, which holds the 4-neighbourhood) or on the dilated grid
    (``dy`` and ``dx`` multiples of ``dilation``), without ``(0, 0)`` and keeping only one of
    ``(dy, dx)`` / ``(-dy, -dx)`` (``dy > 0``, or ``dy == 0`` and ``dx > 0``).

    Returns:
        (K, 2) long tensor of ``(dy, dx)``.
    """
    if window < 3 or center < 1 or dilation < 1:
        raise ValueError(
            f"stratified sampling needs window >= 3, center >= 1, dilation >= 1; got "
            f"window={window}, center={center}, dilation={dilation}"
        )
    return _window_offsets(
        window, lambda dy, dx: (dy.abs() + dx.abs() <= center) | _on_grid(dy, dx, dilation)
    )


def _on_grid(dy: torch.Tensor, dx: torch.Tensor, dilation: int) -> torch.Tensor:
    return (dy % dilation == 0) & (dx % dilation == 0)


def _window_offsets(window: int, select) -> torch.Tensor:
    """The offsets ``(dy, dx)``, ``|dy|, |dx| <= window // 2``, for which ``select(dy, dx)``
    holds, one of ``(dy, dx)`` / ``(-dy, -dx)`` each (``dy > 0``, or ``dy == 0`` and
    ``dx > 0``): a (K, 2) long tensor."""
    h = window // 2
    r = torch.arange(-h, h + 1)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    keep = select(dy, dx) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    return torch.stack([dy[keep], dx[keep]], dim=1)


def reference_offsets(window: int, center: int, dilation: int) -> torch.Tensor:
    """Pair offsets of the research code's L_pi kernel (its ``create_pairwise_conv_kernel`` for a
    square ``window``), one per unordered pair.

    Every offset ``(dy, dx)`` with ``max(|dy|, |dx|) <= window // 2`` that lies in the dense
    centre ``|dy| + |dx| < center`` (strictly; :func:`stratified_offsets` has ``<=``), on the
    dilated grid (``dy`` and ``dx`` multiples of ``dilation``), or on the row / column through
    the centre (all of it, out to the window's edge); without ``(0, 0)`` and keeping
    ``dy > 0``, or ``dy == 0`` and ``dx > 0``.

    Returns:
        (K, 2) long tensor of ``(dy, dx)``.
    """
    if window < 3 or window % 2 == 0 or center < 0 or dilation < 1:
        raise ValueError(
            f"the research code's kernel needs an odd window >= 3, center >= 0, dilation >= 1; "
            f"got window={window}, center={center}, dilation={dilation}"
        )
    return _window_offsets(
        window,
        lambda dy, dx: (dy.abs() + dx.abs() < center)
        | _on_grid(dy, dx, dilation)
        | (dy == 0)
        | (dx == 0),
    )


def reference_pairs(
    f: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    offsets: torch.Tensor,
    include_background: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The research code's pairs: every centre pixel (on an instance, or any valid pixel with
    ``include_background``) with the pixel at each offset, whatever that pixel is (background
    included). A partner outside the map is the nearest pixel of the border (the research code
    pads with ``ReplicationPad2d``); pairs whose partner is batch padding are left out.

    Args:
        f, ids, valid: (B, H, W).
        offsets: (K, 2), e.g. from :func:`reference_offsets`.

    Returns:
        ``(fa, fb, same)``, each (P,), P = K x centres when nothing is padding.
    """
    _, hgt, wid = f.shape
    use = valid if include_background else valid & (ids > 0)
    bi, yi, xi = use.nonzero(as_tuple=True)  # (N,) centres
    offs = offsets.to(f.device)
    y2 = (yi[None, :] + offs[:, :1]).clamp(0, hgt - 1)  # (K, N)
    x2 = (xi[None, :] + offs[:, 1:]).clamp(0, wid - 1)
    b2 = bi[None, :].expand_as(y2)
    ok = valid[b2, y2, x2]
    fa = f[bi, yi, xi][None, :].expand_as(y2)[ok]
    fb = f[b2, y2, x2][ok]
    same = (ids[bi, yi, xi][None, :] == ids[b2, y2, x2])[ok]
    return fa, fb, same


def stratified_pairs(
    f: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    offsets: torch.Tensor,
    include_background: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs (p, p + offset) whose both pixels are on instances (or valid, with
    ``include_background``).

    Args:
        f, ids, valid: (B, H, W).
        offsets: (K, 2) from :func:`stratified_offsets`.

    Returns:
        ``(fa, fb, same)``, each (P,).
    """
    b, hgt, wid = f.shape
    h = int(offsets.abs().max()) if offsets.numel() else 0
    use = valid if include_background else valid & (ids > 0)
    f_pad = F.pad(f, (h, h, h, h)).reshape(-1)
    ids_pad = F.pad(ids, (h, h, h, h)).reshape(-1)
    use_pad = F.pad(use.to(torch.uint8), (h, h, h, h)).reshape(-1).bool()
    wp, hp = wid + 2 * h, hgt + 2 * h
    bi, yi, xi = use.nonzero(as_tuple=True)
    base = bi * (hp * wp) + (yi + h) * wp + (xi + h)  # (N,) centre pixels in the padded maps
    offs = (offsets[:, 0] * wp + offsets[:, 1]).to(base.device)  # (K,)
    nb = base[None, :] + offs[:, None]  # (K, N)
    ok = use_pad[nb]
    fa = f_pad[base].expand_as(nb)[ok]
    fb = f_pad[nb][ok]
    same = (ids_pad[base].expand_as(nb) == ids_pad[nb])[ok]
    return fa, fb, same


def random_pairs(
    f: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    num_pixels: int,
    include_background: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pair sampling over the whole image: ``num_pixels`` instance pixels drawn per
    image without replacement (all of them if fewer), and every pair among them.

    Returns:
        ``(fa, fb, same)``, each (P,), ``P = sum_i n_i (n_i - 1) / 2``.
    """
    use = valid if include_background else valid & (ids > 0)
    fa, fb, same = [], [], []
    for i in range(f.shape[0]):
        idx = use[i].reshape(-1).nonzero(as_tuple=True)[0]
        if idx.numel() > num_pixels:
            perm = torch.randperm(idx.numel(), generator=generator)[:num_pixels]
            idx = idx[perm.to(idx.device)]
        a, b = torch.triu_indices(idx.numel(), idx.numel(), offset=1, device=idx.device)
        fi, ii = f[i].reshape(-1)[idx], ids[i].reshape(-1)[idx]
        fa.append(fi[a])
        fb.append(fi[b])
        same.append(ii[a] == ii[b])
    return torch.cat(fa), torch.cat(fb), torch.cat(same)


def permutation_invariant_loss(
    f: torch.Tensor,
    ids: torch.Tensor,
    valid: torch.Tensor,
    sampling: str = "stratified",
    offsets: Optional[torch.Tensor] = None,
    num_pixels: int = 1024,
    include_background: bool = False,
    margin: float = 1.0,
    theta: float = 0.1,
    diff_weight: float = 1.0,
    generator: Optional[torch.Generator] = None,
    pairs: str = "foreground",
) -> torch.Tensor:
    """L_pi over sampled pixel pairs: ``sampling`` "stratified" (``offsets``) or "random"
    (``num_pixels`` per image). See :func:`pair_loss`. ``f`` is the ReLU label map (B, H, W).

    ``pairs`` "foreground": pairs of pixels that are both on instances (both valid with
    ``include_background``); "reference": the research code's pairs (:func:`reference_pairs`,
    stratified sampling only; ``offsets`` then come from :func:`reference_offsets`), with
    ``|f(p1) - f(p2)|`` clamped to :data:`REFERENCE_DIFF_RANGE` as there.
    """
    if pairs not in ("foreground", "reference"):
        raise ValueError(
            f"MODEL.DVIS.LOSS.PI_PAIRS must be 'foreground' or 'reference', got {pairs!r}"
        )
    if sampling == "stratified":
        if offsets is None:
            raise ValueError("permutation_invariant_loss: stratified sampling needs offsets")
        select = reference_pairs if pairs == "reference" else stratified_pairs
        fa, fb, same = select(f, ids, valid, offsets, include_background)
    elif sampling == "random":
        if pairs == "reference":
            raise ValueError(
                "MODEL.DVIS.LOSS.PI_PAIRS 'reference' (the research code's dilated-kernel pairs) "
                "needs MODEL.DVIS.LOSS.PI_SAMPLING 'stratified', got 'random'"
            )
        fa, fb, same = random_pairs(f, ids, valid, num_pixels, include_background, generator)
    else:
        raise ValueError(
            f"MODEL.DVIS.LOSS.PI_SAMPLING must be 'stratified' or 'random', got {sampling!r}"
        )
    diff_range = REFERENCE_DIFF_RANGE if pairs == "reference" else None
    return pair_loss(fa, fb, same, margin, theta, diff_weight, diff_range)


def mumford_shah_loss(
    f: torch.Tensor, valid: torch.Tensor, normalization: str = "all_pixels"
) -> torch.Tensor:
    """Mumford-Shah regulariser in Cauchy form (eq. 7):
    ``log((f(x, y) - f(x, y + 1))^2 + (f(x, y) - f(x + 1, y))^2 + 1)`` (forward differences;
    a pixel counts when it and both its forward neighbours are valid).

    ``normalization`` "all_pixels": the mean over every such pixel. "nonzero": the research
    code's mean over the terms that are > 0 only (the pixels where f is not locally flat), its
    pixels being those of the interior (its unpadded 3x3 difference kernels leave out the first
    row and column); on a map that is flat but for its edges, this is larger by the ratio of
    all pixels to edge pixels.

    Args:
        f: (B, H, W) label map ``ReLU(z)``; valid: (B, H, W) bool.
    """
    if normalization == "all_pixels":
        c, right, down = f[:, :-1, :-1], f[:, :-1, 1:], f[:, 1:, :-1]
        ok = valid[:, :-1, :-1] & valid[:, :-1, 1:] & valid[:, 1:, :-1]
    elif normalization == "nonzero":
        c, right, down = f[:, 1:-1, 1:-1], f[:, 1:-1, 2:], f[:, 2:, 1:-1]
        ok = valid[:, 1:-1, 1:-1] & valid[:, 1:-1, 2:] & valid[:, 2:, 1:-1]
    else:
        raise ValueError(
            "MODEL.DVIS.LOSS.MS_NORMALIZATION must be 'all_pixels' or 'nonzero', "
            f"got {normalization!r}"
        )
    dx, dy = c - right, c - down
    terms = torch.log(dx * dx + dy * dy + 1.0)[ok]
    if normalization == "nonzero":
        terms = terms[terms > 0]
    if terms.numel() == 0:
        return f.sum() * 0.0
    return terms.mean()


def quantization_loss(f: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Quantization term ``|f - round(f)|`` averaged over the valid pixels with ``f > 0`` (the
    background is 0, hence already quantized). The gradient flows through the first ``f``
    only: ``round`` is piecewise constant.

    Args:
        f: (B, H, W) label map ``ReLU(z)``; valid: (B, H, W) bool.
    """
    ok = valid & (f > 0)
    if not ok.any():
        return f.sum() * 0.0
    return (f - torch.round(f).detach()).abs()[ok].mean()
