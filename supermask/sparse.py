"""Sparse exports: a ticket whose masked Linear layers hold only their kept weights.

``export --format sparse`` writes the plain architecture's state dict (weights x mask, as
``state-dict``) with each masked Linear weight replaced by its CSR components
(``<name>.crow_indices``, ``<name>.col_indices``, ``<name>.values``; 32-bit indices); convolutions and every other
tensor stay dense. :func:`sparse_model` loads it into the plain architecture with each such Linear
replaced by a :class:`SparseLinear` computing ``bias + W_csr @ x`` (CPU and CUDA), whose outputs
equal the masked network's within float tolerance. On a CPU CSR pays off only at low density
(``scripts/bench.py --only sparse`` measures it against the dense layer).

:func:`to_semi_structured` turns the Linear layers of a loaded network whose weights are 2:4
along their inputs (an ``nm:2:4`` ticket's, from any export that holds weights) into
``torch.sparse.to_sparse_semi_structured`` tensors, which NVIDIA's sparse tensor cores multiply
(CUDA, compute capability 8.0 or later, float16/bfloat16). It is refused on a machine without one.
"""

from __future__ import annotations

import warnings
import torch
from torch import Tensor, nn

from .errors import RunError, SupermaskError

CSR_PARTS = ("crow_indices", "col_indices", "values")


def _quietly(fn, *args):
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args)


def sparse_state_dict(folded: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """``folded`` (weights x mask) with every masked 2-D weight as its CSR components."""
    out = {}
    for key, value in folded.items():
        if key in masks and value.dim() == 2:
            csr = _quietly(value.to_sparse_csr)
            parts = {part: getattr(csr, part)().contiguous() for part in CSR_PARTS}
            if value.numel() < 2**31:  # 32-bit indices: a third smaller file
                parts = {k: v.to(torch.int32) if k != "values" else v for k, v in parts.items()}
            out.update({f"{key}.{part}": tensor for part, tensor in parts.items()})
        else:
            out[key] = value
    return out


class SparseLinear(nn.Module):
    """A Linear layer whose weight is a sparse CSR tensor: ``y = x W^T + b``."""

    def __init__(self, weight: Tensor, bias: bool = True):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight, persistent=False)  # the export stores its CSR parts
        self.bias = nn.Parameter(torch.zeros(self.out_features), requires_grad=False) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.bias is None:
            y = _quietly(torch.mm, self.weight, flat.T).T
        else:
            y = _quietly(torch.addmm, self.bias[:, None], self.weight, flat.T).T
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kept={self.weight.values().numel()}"


def checked_csr(state: dict[str, Tensor], weight: str, shape: tuple[int, int], path) -> Tensor:
    """The CSR tensor of ``weight``'s parts in ``state`` (read from ``path``, not trusted), checked
    before any kernel reads it: 1-D parts, integer indices of one dtype, float values, a row
    pointer of ``rows + 1`` entries, and the CSR invariants (the row pointer starts at 0, never
    decreases and ends at the number of values; column indices within the layer's inputs, sorted
    and distinct within a row). A damaged or tampered file is a ``RunError``: without these checks
    the sparse kernels read outside the tensors, or end the process."""
    try:
        crow, col, values = (state[f"{weight}.{part}"] for part in CSR_PARTS)
    except KeyError as exc:
        raise RunError(f"{path}: {weight}: lacks its CSR part {exc.args[0]}") from None
    problem = None
    if any(t.dim() != 1 for t in (crow, col, values)):
        problem = "a part is not one-dimensional"
    elif crow.dtype not in (torch.int32, torch.int64) or col.dtype != crow.dtype:
        problem = f"indices of dtype {crow.dtype} and {col.dtype} (int32 or int64, the same for both)"
    elif values.dtype != torch.float32:
        problem = f"values of dtype {values.dtype} (float32)"
    elif crow.numel() != shape[0] + 1:
        problem = f"a row pointer of {crow.numel()} entries for {shape[0]} rows"
    elif col.numel() != values.numel():
        problem = f"{col.numel()} column indices for {values.numel()} values"
    elif not bool(torch.isfinite(values).all()):
        problem = "NaN or infinite values"
    if problem is None:
        try:
            return _quietly(lambda *a: torch.sparse_csr_tensor(*a, check_invariants=True), crow, col, values, shape)
        except (RuntimeError, ValueError) as exc:
            problem = str(exc).splitlines()[0]
    raise RunError(f"{path}: {weight}: damaged CSR parts ({problem})")


def sparse_model(model: nn.Module, state: dict[str, Tensor], path) -> nn.Module:
    """``model`` (the plain architecture) holding a sparse export's ``state``."""
    weights = sorted({key.rsplit(".", 1)[0] for key in state if key.endswith(".crow_indices")})
    dense_state = {k: v for k, v in state.items() if not any(k.startswith(w + ".") for w in weights)}
    for weight in weights:
        layer_name = weight.rsplit(".", 1)[0]
        try:
            layer = model.get_submodule(layer_name)
        except AttributeError:
            raise RunError(f"{path}: {weight} is not a weight of this architecture") from None
        if not isinstance(layer, nn.Linear):
            raise RunError(f"{path}: {weight} is not a Linear layer's weight")
        csr = checked_csr(state, weight, (layer.out_features, layer.in_features), path)
        parent_name, _, child = layer_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child,
                SparseLinear(csr, bias=layer.bias is not None))
    model.load_state_dict(dense_state, assign=True)  # biases and every dense tensor, by the plain names
    return model


def is_two_four(weight: Tensor) -> bool:
    """Whether a 2-D weight keeps at most 2 nonzeros in every group of 4 consecutive inputs."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool((weight.detach().ne(0).reshape(-1, 4).sum(dim=1) <= 2).all())


def to_semi_structured(model: nn.Module, dtype: torch.dtype = torch.float16) -> tuple[nn.Module, list[str]]:
    """``model`` on the GPU in ``dtype`` with every 2:4 Linear weight as a semi-structured sparse
    tensor; returns it and the names of the layers converted (a layer whose shape the kernels do not
    take stays dense)."""
    import logging

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        raise SupermaskError("semi-structured 2:4 tensors need a CUDA GPU of compute capability 8.0 or later "
                             "(sparse tensor cores); this machine has none")
    from torch.sparse import to_sparse_semi_structured

    model = model.to("cuda", dtype).eval()
    converted = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear and is_two_four(module.weight):
            try:
                module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
            except (RuntimeError, ValueError) as exc:
                logging.getLogger(__name__).warning("%s stays dense: %s", name, str(exc).splitlines()[0])
                continue
            converted.append(name)
    return model, converted
