"""Files from someone else: a damaged or tampered export is refused in one line (never a crash, a
read outside a tensor, or an allocation the file does not justify), and an intact one evaluates
exactly. The cases of the hostile-user report (#29), then a property test over mutations."""

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from supermask import SearchConfig, TrainConfig, search
from supermask.errors import SupermaskError
from supermask.exports import CHECKSUM_KEY, evaluate_export, export_run, load_export, load_ticket
from supermask.ticket_files import weights_checksum

FORMATS = ("state-dict", "torch-prune", "sparse", "compact-dense", "ticket")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LeNet ticket (edge-popup, density 0.1) in every format that holds weights, and its accuracy."""
    out = tmp_path_factory.mktemp("untrusted")
    result = search(SearchConfig(arch="lenet_300_100", density=0.1, out=str(out / "runs"), device="cpu",
                                 train=TrainConfig(iterations=30, batch_size=128)))
    files = {}
    for fmt in FORMATS:
        files[fmt] = out / f"{fmt}.safetensors"
        export_run(result.run_dir, fmt, files[fmt])
    return files, result.result["test_accuracy"]


def _parts(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return st_load(data), json.loads(data[8:8 + length]).get("__metadata__") or {}


def _rewrite(path: Path, out: Path, tensors=None, metadata=None, reseal: bool = True) -> Path:
    """``path`` with some tensors or metadata replaced; ``reseal`` recomputes the checksum, as a
    careful forger would (so the structural checks, not the checksum, must catch it)."""
    old_tensors, old_meta = _parts(path)
    tensors = {**old_tensors, **(tensors or {})}
    metadata = {**old_meta, **(metadata or {})}
    if reseal:
        metadata[CHECKSUM_KEY] = weights_checksum(tensors)
    out.write_bytes(st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))
    return out


def _refused(path: Path, match: str = "") -> str:
    with pytest.raises(SupermaskError, match=match) as caught:
        evaluate_export(path)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def test_intact_exports_evaluate_exactly(exported):
    files, accuracy = exported
    for fmt, path in files.items():
        assert evaluate_export(path)["test_accuracy"] == pytest.approx(accuracy, abs=0.005), fmt


# -- CSR parts (the segmentation faults and the out-of-bounds read) ---------------------------------

def _csr(files) -> tuple[dict, str]:
    tensors, _ = _parts(files["sparse"])
    return tensors, "3.weight"  # a 100 x 300 layer


@pytest.mark.parametrize("damage, match", [
    ("column beyond inputs", "col_indices"),
    ("negative column", "col_indices"),
    ("inflated row pointer", "crow_indices"),
    ("unsorted columns", "sorted"),
    ("float indices", "dtype"),
    ("two-dimensional part", "one-dimensional"),
    ("short row pointer", "row pointer of"),
    ("fewer columns than values", "column indices for"),
    ("NaN value", "NaN"),
])
def test_damaged_csr_parts_are_refused_before_any_kernel_reads_them(exported, tmp_path, damage, match):
    files, _ = exported
    tensors, w = _csr(files)
    crow, col, values = (tensors[f"{w}.{p}"].clone() for p in ("crow_indices", "col_indices", "values"))
    if damage == "column beyond inputs":
        col[0] = 301
    elif damage == "negative column":
        col[5] = -3
    elif damage == "inflated row pointer":
        crow[-1] += 1000
    elif damage == "unsorted columns":
        row = int(torch.nonzero(crow[1:] - crow[:-1] >= 2)[0])
        start = int(crow[row])
        col[start], col[start + 1] = col[start + 1].clone(), col[start].clone()
    elif damage == "float indices":
        col = col.float()
    elif damage == "two-dimensional part":
        values = values[None]
    elif damage == "short row pointer":
        crow = crow[:-1]
    elif damage == "fewer columns than values":
        col = col[:-1]
    elif damage == "NaN value":
        values[0] = float("nan")
    parts = {f"{w}.crow_indices": crow, f"{w}.col_indices": col, f"{w}.values": values}
    _refused(_rewrite(files["sparse"], tmp_path / "bad.safetensors", tensors=parts), match)


def test_a_flipped_byte_anywhere_in_the_tensors_is_refused_by_the_checksum(exported, tmp_path):
    files, _ = exported
    data = bytearray(files["sparse"].read_bytes())
    data[-7] ^= 0x40  # inside the last tensor's bytes
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    _refused(tmp_path / "flipped.safetensors", "checksum differs")


# -- metadata that is not what it claims -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["state-dict", "ticket"])
@pytest.mark.parametrize("field, text, match", [
    ("provenance", "{not json", "not valid JSON"),
    ("provenance", "[1, 2, 3]", "a JSON list, not an object"),
    ("width", 2.5e8, "do not fit|not those of|overflow"),  # 94 TB if allocated: refused without allocating
    ("arch", "conv6", "do not fit|not those of|lacks"),
    ("num_classes", "ten", "num_classes"),
    ("input_shape", [1, 28], "input_shape"),
    ("eval_batch_size", "x", "eval_batch_size"),
])
def test_metadata_that_is_not_what_it_claims_is_one_line(exported, tmp_path, fmt, field, text, match):
    files, _ = exported
    _, meta = _parts(files[fmt])
    key = "supermask_provenance" if fmt != "ticket" or field in ("provenance", "eval_batch_size") else "supermask_ticket"
    if field == "provenance":
        new = {"supermask_provenance": text, "supermask_ticket": text} if fmt == "ticket" else {key: text}
    else:
        description = json.loads(meta[key])
        if fmt == "ticket" and field == "input_shape":
            description["in_channels"] = "one"
            match = "input_shape"
        description[field] = text
        new = {key: json.dumps(description)}
    path = _rewrite(files[fmt], tmp_path / "bad.safetensors", metadata=new)
    with pytest.raises(SupermaskError, match=match):
        evaluate_export(path)


def test_a_huge_claimed_width_allocates_nothing(exported, tmp_path):
    import resource

    files, _ = exported
    _, meta = _parts(files["state-dict"])
    description = dict(json.loads(meta["supermask_provenance"]), width=2.5e8)
    path = _rewrite(files["state-dict"], tmp_path / "wide.safetensors",
                    metadata={"supermask_provenance": json.dumps(description)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SupermaskError, match="do not fit|overflow"):
        load_export(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: no 94 TB, no 1 GB


def test_a_ticket_whose_coded_mask_is_too_short_is_refused_before_building(exported, tmp_path):
    files, _ = exported
    tensors, _ = _parts(files["ticket"])
    name = next(k for k in tensors if k.endswith(".mask_bits"))
    path = _rewrite(files["ticket"], tmp_path / "short.safetensors", tensors={name: tensors[name][:-3]})
    with pytest.raises(SupermaskError, match="coded mask"):
        load_ticket(path)


# -- the property: any mutation is a one-line refusal or the exact result ---------------------------

MUTATIONS = ("flip-byte", "truncate", "dtype", "reshape", "metadata")
FIELD_VALUES = (None, -1, 0, 1e30, "x", [], {}, True, [1, 2, 3])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), mutation=st.sampled_from(MUTATIONS), pick=st.integers(0, 10**6),
       value=st.sampled_from(FIELD_VALUES), reseal=st.booleans())
def test_any_mutation_is_a_one_line_refusal_or_the_exact_result(exported, tmp_path, fmt, mutation, pick, value,
                                                                reseal):
    files, accuracy = exported
    tensors, meta = _parts(files[fmt])
    names = sorted(tensors)
    name = names[pick % len(names)]
    tensor = tensors[name]
    changed_tensors, changed_meta = {}, {}
    if mutation == "flip-byte" and tensor.numel():
        raw = tensor.contiguous().view(torch.uint8).reshape(-1).clone()
        raw[pick % raw.numel()] ^= 1 << (pick % 8)
        changed_tensors[name] = raw.view(tensor.dtype).reshape(tensor.shape)
    elif mutation == "truncate":
        changed_tensors[name] = tensor.reshape(-1)[: max(0, tensor.numel() - 1 - pick % 3)]
    elif mutation == "dtype":
        changed_tensors[name] = tensor.to([torch.float64, torch.int32, torch.float16, torch.uint8][pick % 4])
    elif mutation == "reshape":
        changed_tensors[name] = tensor.reshape(-1)
    else:
        key = "supermask_ticket" if fmt == "ticket" and pick % 2 else "supermask_provenance"
        description = json.loads(meta[key])
        field = sorted(description)[pick % len(description)]
        description[field] = value
        changed_meta[key] = json.dumps(description)
    # a flipped byte is damage (never resealed); a structural change may come with a recomputed checksum
    reseal = reseal and mutation != "flip-byte"
    path = _rewrite(files[fmt], tmp_path / f"m-{pick}.safetensors", changed_tensors, changed_meta, reseal=reseal)
    try:
        measured = evaluate_export(path)["test_accuracy"]
    except SupermaskError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # accepted: then it is the ticket's network (a mutation that changed nothing that computes)
    assert measured == pytest.approx(accuracy, abs=0.005), (fmt, mutation, name)


def test_the_property_has_its_control(exported, tmp_path):
    """The rewriting itself keeps an export exact: what the property refuses, the mutation caused."""
    files, accuracy = exported
    for fmt, path in files.items():
        same = _rewrite(path, tmp_path / f"same-{fmt}.safetensors")
        assert evaluate_export(same)["test_accuracy"] == pytest.approx(accuracy, abs=0.005)
