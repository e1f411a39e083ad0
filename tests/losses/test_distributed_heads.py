"""Every registered head over 2 gloo processes equals the single-process head on the same global batch (loss,
per-sample loss, accuracy, gradients of the embeddings and of the class centres, to 1e-5; its logged statistics
and start-up line), with the centres sharded over the ranks and replicated; plus shard bounds and Partial FC on
shards. One launch of 2 processes covers all heads."""

import itertools

import distributed_worker as w
import pytest
import torch
import torch.multiprocessing as mp

from losses.distributed import shard_bounds


@pytest.fixture(scope="module", params=[True, False], ids=["sharded", "replicated"])
def ranks(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("sharded" if request.param else "replicated")
    mp.start_processes(w.rank_main, args=(2, str(d / "store"), str(d), w.NAMES, request.param), nprocs=2,
                       start_method="spawn")
    return request.param, [torch.load(d / f"rank{r}.pt") for r in range(2)]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", w.NAMES)
def test_two_processes_equal_one(ranks, name):
    shard, res = ranks
    for step, ref in enumerate(w.reference(name)):
        r0, r1 = res[0][name][step], res[1][name][step]
        for r in (r0, r1):       # every rank reports the global loss and per-sample values
            close(r["loss"], ref["loss"])
            close(r["per_sample"], ref["per_sample"])
            close(r["cos"], ref["cos"])
            assert r["accuracy"] == ref["accuracy"]
            assert r["stats"].keys() == ref["stats"].keys() and r["startup"] == ref["startup"]
            for key, value in ref["stats"].items():
                assert r["stats"][key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
        close(torch.cat([r0["grad_x"], r1["grad_x"]]), ref["grad_x"])   # each rank: its own rows
        if ref["grad_loss_bias"] is not None:                             # UniFace's b: complete on every rank
            close(r0["grad_loss_bias"], ref["grad_loss_bias"])
            close(r1["grad_loss_bias"], ref["grad_loss_bias"])
        if shard:
            assert r0["bounds"] == (0, 6) and r1["bounds"] == (6, 11)
            close(torch.cat([r0["grad_w"], r1["grad_w"]]), ref["grad_w"])
            if ref["grad_b"] is not None:
                close(torch.cat([r0["grad_b"], r1["grad_b"]]), ref["grad_b"])
        else:
            close(r0["grad_w"], ref["grad_w"])
            close(r1["grad_w"], ref["grad_w"])
    close(res[0][name + "/full_weight"], w.make_head(name).weight.detach())   # gathered shards = the full matrix


def test_shard_bounds_cover_every_class_once():
    for c, n in [(11, 2), (10, 4), (85742, 8), (5, 5)]:
        bounds = [shard_bounds(c, n, r) for r in range(n)]
        assert bounds[0][0] == 0 and bounds[-1][1] == c
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert max(e - s for s, e in bounds) - min(e - s for s, e in bounds) <= 1
    with pytest.raises(ValueError, match="world size 3 is larger than the number of classes 2"):
        shard_bounds(2, 3, 0)


def test_partial_fc_on_shards(tmp_path):
    mp.start_processes(w.partial_fc_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        r = torch.load(tmp_path / f"pfc{rank}.pt")
        start, end = r["bounds"]
        classes, labels = r["classes"], r["labels"]
        assert ((classes >= start) & (classes < end)).all() and (classes.diff() > 0).all()
        mine = labels[(labels >= start) & (labels < end)].unique()
        assert set(mine.tolist()) <= set(classes.tolist())            # every positive centre is kept
        assert len(classes) == max(-(-(end - start) // 2), len(mine))  # ceil(0.5 * shard) or all positives
        assert torch.isfinite(r["loss"]) and r["grad_w_rows"] == len(classes)


def test_gradient_clipping_uses_the_global_norm_and_replicas_share_rank0s_gradient(tmp_path):
    mp.start_processes(w.clip_main, args=(2, str(tmp_path / "store"), str(tmp_path), 0.5), nprocs=2,
                       start_method="spawn")
    head = w.make_head("magface")
    x, labels = w.batch(0)
    head(x.requires_grad_(True), labels).loss.backward()
    backbone = torch.nn.Parameter(torch.zeros(5))
    backbone.grad = torch.arange(5.0)
    total = torch.nn.utils.clip_grad_norm_([backbone, head.weight], 0.5)
    r0, r1 = (torch.load(tmp_path / f"clip{r}.pt") for r in range(2))
    assert float(total) > 0.5                                       # clipping really happened
    for r in (r0, r1):
        assert abs(r["total"] - float(total)) < 1e-4
        close(r["backbone"], backbone.grad)
    close(torch.cat([r0["weight"], r1["weight"]]), head.weight.grad)
    assert r0["replica"].tolist() == r1["replica"].tolist() == [1.0] * 3   # rank 0's gradient on every rank
    for r in (r0, r1):   # drifted copies: rank 0's parameters and buffers everywhere; then nothing to do
        assert r["synced"] == [True, False]
        assert r["drifted"]["weight"].tolist() == [1.0] * 3 and r["drifted"]["running_mean"].tolist() == [5.0] * 3


def test_clipping_keeps_every_tensor_on_the_gradients_device(monkeypatch):
    """A rank whose head shard got no gradient adds a zero made on the gradients' device, and the all-reduce gets a
    device tensor (NCCL refuses CPU tensors); the norm comes back as a tensor there (no host sync). 'meta' stands
    in for a GPU: any tensor made without a device would land on the CPU and fail the check."""
    import harness.training.distributed as hd
    reduced = []
    monkeypatch.setattr(hd.dist, "all_reduce", lambda t: reduced.append(t.device))
    backbone = torch.nn.Parameter(torch.zeros(5, device="meta"))
    backbone.grad = torch.ones(5, device="meta")
    idle_head = torch.nn.Parameter(torch.zeros(3, device="meta"))      # no gradient on this rank
    total = hd.clip_gradients([backbone], [idle_head], 1.0, head_sharded=True)
    assert reduced == [torch.device("meta")]
    assert isinstance(total, torch.Tensor) and total.device.type == "meta"


def test_a_rank_without_a_gpu_of_its_own_is_refused():
    """NCCL needs one GPU per rank: rank 1 on a one-GPU node gets an error naming both ways out, not CUDA's
    'invalid device ordinal'."""
    from harness.training.distributed import rank_gpu
    assert rank_gpu(1, 2, "auto") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1 needs a GPU.*has 1 visible.*--nproc-per-node=1.*"
                                         r"train.device='\"cpu\"'"):
        rank_gpu(1, 1, "auto")
