"""Per-image pieces of a batch's concatenated detections."""

from typing import List, Sequence, Sized

import torch


def split_per_image(x: torch.Tensor, per_image: Sequence[Sized]) -> List[torch.Tensor]:
    """``x`` (R_1 + ... + R_N, ...), the rows of N images' detections in order, split into
    the images' rows; ``per_image[i]`` has ``len() == R_i`` (e.g. an :class:`Instances`).

    With one image it is ``[x]``, without counting: a trace (``torch.jit.trace``) would record
    the counts as constants, wrong for another image.
    """
    if len(per_image) == 1:
        return [x]
    return list(x.split([len(d) for d in per_image]))
