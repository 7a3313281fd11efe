"""load_weights: every unusable checkpoint fails with an error that names the file, says what is wrong
and where such weights come from; good checkpoints still load strictly with weights_only=True."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from unittest import mock

import pytest
import torch

from mmfusion_attacks.errors import MMFusionError
from mmfusion_attacks.models import WeightsError, WeightsMismatchError, create_model, load_weights
from mmfusion_attacks.models.tiny import TinyRGBTSegmenter

WHERE = "get them from the model's release page"


@pytest.fixture
def source() -> TinyRGBTSegmenter:
    torch.manual_seed(0)
    return TinyRGBTSegmenter(num_classes=9, width=8)


def fresh() -> TinyRGBTSegmenter:
    torch.manual_seed(1)
    return TinyRGBTSegmenter(num_classes=9, width=8)


def assert_unloadable(path: Path, problem: str, cls: type[Exception] = WeightsError) -> WeightsError:
    net = fresh()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(cls) as info:
        load_weights(net, path, WHERE)
    message = str(info.value)
    assert str(path) in message, message
    assert WHERE in message, message
    assert re.search(problem, message), message
    assert isinstance(info.value, (MMFusionError, ValueError))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), "a failed load changed the model"
    return info.value


def test_good_checkpoint_loads_with_weights_only(source, tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    with mock.patch("torch.load", wraps=torch.load) as spy:
        net = load_weights(fresh(), path, WHERE)
    assert spy.call_args.kwargs.get("weights_only") is True
    assert all(torch.equal(net.state_dict()[k], v) for k, v in source.state_dict().items())


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    assert_unloadable(path, "empty")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_checkpoint(source, tmp_path, legacy, keep):
    path = tmp_path / "cut.pth"
    torch.save(source.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert_unloadable(path, "truncated or corrupt")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).tolist()))
    assert_unloadable(path, "not a torch checkpoint")


def test_text_file(tmp_path):
    path = tmp_path / "final.pth"
    path.write_text("<html><body>404 Not Found</body></html>\n")
    assert_unloadable(path, "text.*not a torch checkpoint")


def test_git_lfs_pointer(tmp_path):
    path = tmp_path / "final.pth"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 11000000\n")
    assert_unloadable(path, "Git LFS pointer")


def test_plain_pickle_of_a_list(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    assert_unloadable(path, "not a torch checkpoint")


def test_torch_saved_non_mapping(source, tmp_path):
    path = tmp_path / "list.pth"
    torch.save(list(source.state_dict().values()), path)
    assert_unloadable(path, "holds a list.*not a state_dict")


def test_mapping_of_non_tensors(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.01}, path)
    assert_unloadable(path, "not a state_dict.*2 of its 2 entries.*'epoch' \\(int\\)")


def test_whole_pickled_model_is_refused(source, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(source, path)
    assert_unloadable(path, "weights_only=True.*state_dict\\(\\) instead")


def test_nan_and_inf_weights(source, tmp_path):
    state = source.state_dict()
    names = [k for k, v in state.items() if v.is_floating_point()]
    state[names[2]] = state[names[2]].clone().index_fill_(0, torch.tensor([0]), float("nan"))
    state[names[5]] = state[names[5]].clone().fill_(float("inf"))
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    error = assert_unloadable(path, "2 tensor\\(s\\) hold NaN or infinite")
    assert names[2] in str(error) and names[5] in str(error)
    assert not isinstance(error, WeightsMismatchError)


def test_wrong_keys_and_shapes_are_summarised(source, tmp_path):
    state = source.state_dict()
    dropped = sorted(state)[:3]
    for k in dropped:
        del state[k]
    state["extra.weight"] = torch.zeros(2)
    head = "head.1.weight"
    state[head] = torch.zeros(4, *state[head].shape[1:])
    path = tmp_path / "other.pth"
    torch.save(state, path)
    error = assert_unloadable(path, "does not match TinyRGBTSegmenter's state_dict", WeightsMismatchError)
    message = str(error)
    assert "3 missing key(s)" in message and all(k in message for k in dropped)
    assert "1 unexpected key(s) (extra.weight)" in message
    assert re.search(r"1 shape mismatch\(es\) \(head\.1\.weight: checkpoint \(4, 8, 1, 1\) vs model \(9, 8, 1, 1\)\)", message)
    assert isinstance(error, RuntimeError)  # as load_state_dict raises: callers catching RuntimeError keep working


def test_registered_model_names_the_file_and_its_source(tmp_path):
    path = tmp_path / "tiny.pth"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match=re.escape(str(path)) + ".*empty.*torch.save"):
        create_model("tiny-rgbt-segmenter", weights=str(path))


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="directory"):
        load_weights(fresh(), tmp_path, WHERE)
    with pytest.raises(FileNotFoundError, match=WHERE):
        load_weights(fresh(), tmp_path / "absent.pth", WHERE)


def test_zip_archive_that_is_not_a_checkpoint(tmp_path):
    import zipfile

    path = tmp_path / "weights.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "weights are elsewhere")
    assert_unloadable(path, "zip archive but not a torch checkpoint")


def test_checkpoint_without_num_batches_tracked_loads(source, tmp_path):
    """Checkpoints from torch < 0.4.1 (the official MFNet one among them) lack the batch-norm
    counters; strict loading fills them in, and so must the mismatch check."""
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) < len(source.state_dict())
    path = tmp_path / "old.pth"
    torch.save(state, path)
    net = load_weights(fresh(), path, WHERE)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    del state[next(k for k in state if k.endswith("running_mean"))]
    torch.save(state, path)
    assert_unloadable(path, "1 missing key", WeightsMismatchError)
