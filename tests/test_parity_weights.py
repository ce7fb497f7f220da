"""instseg_d2.parity: the reference-named state dict holds the parity values of the project's
names, through a converter that renames, reshapes and drops entries."""

import pytest
import torch

from instseg_d2.parity import parity_name_map, parity_reference_state, parity_tensor

REFERENCE = {
    "head.fuse.weight": ([4, 3, 1, 1], "float32"),  # a 1x1 conv, a linear layer in the project
    "head.fuse.bias": ([4], "float32"),
    "norm.num_batches_tracked": ([], "int64"),
    "pixel_mean": ([3, 1, 1], "float32"),  # derived from the config in the project: dropped
}


def convert(state):
    out = {}
    for k, v in state.items():
        if k == "pixel_mean":
            continue
        if k == "head.fuse.weight":
            v = v[:, :, 0, 0]
        out[k.replace("head.fuse.", "head.proj.")] = v
    return out


def test_names_followed_through_renaming_reshaping_and_dropping():
    names = parity_name_map(REFERENCE, convert)
    assert names == {
        "head.fuse.weight": "head.proj.weight",
        "head.fuse.bias": "head.proj.bias",
        "norm.num_batches_tracked": "norm.num_batches_tracked",
        "pixel_mean": None,
    }
    state = parity_reference_state(REFERENCE, convert, {"head.proj.bias": -2.0})
    assert set(state) == {"head.fuse.weight", "head.fuse.bias", "norm.num_batches_tracked"}
    w = state["head.fuse.weight"]
    assert w.shape == (4, 3, 1, 1) and w.dtype == torch.float32
    # the project's value (fan-in 3 either way), in the reference's shape
    assert torch.equal(w[:, :, 0, 0], parity_tensor("head.proj.weight", (4, 3)))
    assert torch.equal(state["head.fuse.bias"], torch.full((4,), -2.0))
    assert state["norm.num_batches_tracked"].dtype == torch.int64
    assert state["norm.num_batches_tracked"].item() == 0
    assert parity_reference_state(REFERENCE, names).keys() == state.keys()


def test_parity_values_follow_the_rule():
    w = parity_tensor("a.weight", (2000, 50)).double()
    assert w.std().item() == pytest.approx(50**-0.5, rel=0.02)
    assert torch.equal(parity_tensor("a.weight", (2000, 50)), parity_tensor("a.weight", (2000, 50)))
    assert not torch.equal(parity_tensor("b.weight", (2000, 50)), w.float())
    var = parity_tensor("bn.running_var", (1000,))
    assert var.min() >= 1 and var.mean().item() == pytest.approx(1.08, abs=0.01)  # 1 + 0.1 |N|


def test_a_converter_that_changes_values_is_refused():
    def scaling(state):
        return {k: 2 * v for k, v in state.items()}

    with pytest.raises(ValueError, match="changed the values"):
        parity_name_map(REFERENCE, scaling)
