"""Transfer baselines: pretrain, checkpoints (clear errors), freezing incl. BatchNorm, CLI end to end."""

import pytest
import torch

from continual import ContinualError, RunConfig, Trainer, get_strategy, make_stream
from continual.cli import main
from continual.models import MLP, build_model, grow_head
from continual.strategies import Context
from continual.transfer import (
    FrozenBatchNorm2d, freeze, freeze_backbone, load_backbone, pretrain, read_checkpoint, save_checkpoint, scale_lr,
)


@pytest.fixture(scope="module")
def stream():
    return make_stream("split-digits", num_experiences=2, device="cpu")


@pytest.fixture(scope="module")
def convnet_ckpt(tmp_path_factory, stream):
    path = tmp_path_factory.mktemp("ckpt") / "convnet.pt"
    torch.manual_seed(0)
    model = build_model("convnet", (1, 8, 8), 10, channels=(4, 8))
    trainer = Trainer(model, lr=0.05, epochs=1, device="cpu")
    trainer.fit(stream[0])  # BatchNorm statistics now differ from their initial values
    save_checkpoint(model, path, model_name="convnet", input_shape=(1, 8, 8), source={"note": "test"})
    return path


def _convnet(head="incremental"):
    return build_model("convnet", (1, 8, 8), 0 if head != "fixed" else 10, head=head, channels=(4, 8))


def test_transfer_trains_only_the_head_and_keeps_batchnorm_statistics(stream, convnet_ckpt):
    torch.manual_seed(1)
    model = _convnet()
    meta = load_backbone(model, convnet_ckpt, model_name="convnet")
    assert meta["source"] == {"note": "test"} and meta["model"] == "convnet"
    get_strategy("transfer").prepare_model(model, {}, Context(stream=stream, device=torch.device("cpu"), seed=0))
    grow_head(model, stream[0])
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    from continual.models import HeadExpansion

    trainer = Trainer(model, lr=0.1, epochs=2, momentum=0.9, weight_decay=1e-3, device="cpu", plugins=[HeadExpansion()])
    trainer.run(stream)
    after = model.state_dict()
    for k, v in backbone.items():  # parameters and BatchNorm buffers, bit for bit
        assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[f"head.{k}"], v) for k, v in head.items())
    assert model.head.num_classes == 10
    assert all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_freeze_survives_train_mode_and_keeps_state_dict_keys():
    model = build_model("resnet18", (1, 8, 8), 3, nf=4)
    keys = list(model.state_dict())
    freeze_backbone(model)
    model.train()
    assert list(model.state_dict()) == keys
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith("head."))
    assert all(p.requires_grad for p in model.head.parameters())
    freeze(model.head)
    assert not any(p.requires_grad for p in model.parameters())


def test_finetune_pretrained_freezes_first_blocks_and_scales_backbone_lr(stream):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(16, 16))
    groups = get_strategy("finetune-pretrained").prepare_model(
        model, {"backbone_lr_scale": 0.1, "freeze_blocks": 1}, Context(stream=stream, device=torch.device("cpu"), seed=0))
    first = model.blocks()[0]
    assert not first.weight.requires_grad and model.blocks()[1].weight.requires_grad
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for params, scale in groups:
        scale_lr(opt, params, scale)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(model.blocks()[1].weight)] == pytest.approx(0.05) and lrs[id(model.head.weight)] == 0.5
    assert len(lrs) == len(list(model.parameters()))
    with pytest.raises(ContinualError, match="freeze_blocks=5: MLP has 2 blocks; expected 0..2"):
        get_strategy("finetune-pretrained").prepare_model(
            model, {"backbone_lr_scale": 1.0, "freeze_blocks": 5}, Context(stream=stream, device=torch.device("cpu"), seed=0))


def test_pretrain_writes_a_weights_only_checkpoint(tmp_path):
    path = tmp_path / "p.pt"
    source = pretrain("split-digits", path, classes=[0, 1], epochs=2, device="cpu")
    assert source["classes"] == [0, 1] and source["split"] == "train" and source["test_accuracy"] > 0.9
    ckpt = read_checkpoint(path)
    assert ckpt["model"] == "mlp" and ckpt["input_shape"] == [1, 8, 8]
    assert not any(k.startswith("head.") for k in ckpt["state_dict"])
    assert torch.load(path, weights_only=True)["format"] == "continual.pretrained"
    with pytest.raises(ContinualError, match=r"pretrain classes \[12\]: expected labels of 'split-digits' in 0..9"):
        pretrain("split-digits", tmp_path / "q.pt", classes=[0, 12], device="cpu")


def test_cli_pretrain_then_transfer_and_finetune_pretrained(tmp_path, capsys):
    ckpt = tmp_path / "digits01.pt"
    assert main(["pretrain", "--benchmark", "split-digits", "--classes", "0,1", "--epochs", "2", "--device", "cpu", "--out", str(ckpt)]) == 0
    assert "classes [0, 1]" in capsys.readouterr().out and ckpt.exists()
    common = ["--epochs", "1", "--num-experiences", "2", "--device", "cpu", "--quiet", "--pretrained", str(ckpt)]
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "transfer", "--out", str(out), *common]) == 0
    assert main(["run", "--strategy", "finetune-pretrained", "--set", "backbone_lr_scale=0.1", "--set", "freeze_blocks=1",
                 "--out", str(out), *common]) == 0
    table = capsys.readouterr().out
    assert "transfer" in table and "finetune-pretrained" in table
    from continual import find_results

    results, problems = find_results([str(out)])
    assert len(results) == 2 and not problems
    for r in results:
        assert r.config["pretrained"] == str(ckpt) and r.config["head"] == "incremental"
        assert r.extra["head"] == {"sizes": [5, 10]}


def _write(path, data):
    torch.save(data, path)
    return str(path)


def _bad_checkpoints(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02not a torch file at all")
    truncated = tmp_path / "truncated.pt"
    pretrain("split-digits", truncated, classes=[0, 1], epochs=1, device="cpu")
    truncated.write_bytes(truncated.read_bytes()[:200])
    narrow = MLP(64, (100,), 2)
    save_checkpoint(narrow, tmp_path / "narrow.pt", model_name="mlp", input_shape=(1, 8, 8))
    conv = build_model("convnet", (1, 8, 8), 2, channels=(4,))
    save_checkpoint(conv, tmp_path / "conv.pt", model_name="convnet", input_shape=(1, 8, 8))
    return [
        (str(tmp_path / "missing.pt"), "does not exist; make one with 'continual pretrain"),
        (str(corrupt), "cannot read checkpoint"),
        (str(truncated), "cannot read checkpoint"),
        (_write(tmp_path / "list.pt", [1, 2, 3]), "holds a list, not a state dict"),
        (_write(tmp_path / "module.pt", torch.nn.Linear(2, 2)), "cannot read checkpoint"),  # not weights-only
        (str(tmp_path / "narrow.pt"), "does not fit model mlp: missing backbone.3.bias, backbone.3.weight"),
        (str(tmp_path / "conv.pt"), "was made for model 'convnet' but this run uses 'mlp'"),
        (_write(tmp_path / "shapes.pt", {k: v[..., :1] if v.dim() else v for k, v in MLP(64).state_dict().items()}),
         "shapes (file vs model) backbone.1.bias (1,) vs (400,), backbone.1.weight (400, 1) vs (400, 64)"),
    ]


def test_bad_checkpoints_give_one_line_errors_in_the_cli(tmp_path, capsys):
    runs = tmp_path / "runs"
    for path, message in _bad_checkpoints(tmp_path):
        argv = ["run", "--strategy", "transfer", "--pretrained", path, "--epochs", "1", "--device", "cpu", "--out", str(runs), "--quiet"]
        assert main(argv) == 2, path
        err = capsys.readouterr().err
        assert message in err, (path, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not runs.exists() or list(runs.iterdir()) == []


def test_transfer_without_pretrained_weights_is_refused(tmp_path, capsys):
    assert main(["run", "--strategy", "transfer", "--out", str(tmp_path)]) == 2
    assert "strategy 'transfer' needs pretrained weights: give --pretrained PATH" in capsys.readouterr().err
    with pytest.raises(ContinualError, match="needs pretrained weights"):
        RunConfig(strategy="finetune-pretrained").resolve()
    assert main(["pretrain", "--classes", "a,b", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--classes 'a,b': expected comma-separated labels" in capsys.readouterr().err


def test_a_plain_state_dict_without_the_backbone_prefix_loads(tmp_path):
    """As a torchvision state dict (conv1.weight..., fc.*) loads into TorchvisionResNet18's ``backbone``."""
    torch.manual_seed(0)
    source = MLP(64, (16, 8), 3)
    plain = {k[len("backbone."):]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    plain["fc.weight"] = torch.zeros(1000, 8)  # a classifier of the source task: ignored
    path = tmp_path / "plain.pt"
    torch.save(plain, path)
    target = MLP(64, (16, 8), 5)
    meta = load_backbone(target, path)
    assert meta["model"] is None
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v)


def test_a_pretrained_file_that_fails_its_checksum_is_one_line_and_an_old_one_warns(tmp_path, capsys):
    import warnings

    from continual.errors import ContinualWarning

    path = tmp_path / "p.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=1, device="cpu")
    state = torch.load(path, weights_only=True)
    assert isinstance(state["sha256"], str)
    weight = next(v for v in state["state_dict"].values() if v.numel() >= 16)
    data = bytearray(path.read_bytes())
    data[data.find(weight.reshape(-1)[:16].numpy().tobytes()) + 3] ^= 0x40  # one bit of a weight's exponent
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(data)
    old = tmp_path / "old.pt"  # as written before checksums were stored
    torch.save({k: v for k, v in state.items() if k != "sha256"}, old)

    with pytest.raises(ContinualError, match="fails its checksum"):
        read_checkpoint(flipped)
    with pytest.warns(ContinualWarning, match="has no checksum"):
        assert read_checkpoint(old)["model"] == "mlp"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_checkpoint(path)  # verified: no warning
    common = ["run", "--strategy", "transfer", "--epochs", "1", "--num-experiences", "2", "--device", "cpu",
              "--quiet", "--out", str(tmp_path / "runs")]
    assert main([*common, "--pretrained", str(flipped)]) == 2
    assert capsys.readouterr().err == (f"continual: error: pretrained checkpoint {str(flipped)!r} fails its checksum (the file "
                                       "changed after it was written); re-create it with 'continual pretrain ... --out PATH'\n")
    assert main([*common, "--pretrained", str(old)]) == 0
    assert capsys.readouterr().err == (f"continual: warning: pretrained checkpoint {str(old)!r} has no checksum (written before "
                                       "checksums were stored), so it is not verified; re-create it with 'continual pretrain' "
                                       "to have it verified\n")
