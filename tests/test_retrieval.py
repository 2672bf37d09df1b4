"""Retrieval end to end: the heads and losses against hand computations, a tiny zero-shot run on digits,
`transfer retrieve` (run, latest run, saved embeddings, query images, CSV with separate query and gallery)
checked against brute-force recomputation, and the one-line errors."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.training_helpers import run_cli, tiny_recipe
from transfer.cli import cli
from transfer.engine.losses import angular_margin
from transfer.models.layers import CosineClassifier

RETRIEVAL = {
    "stage": "retrieval",
    # no embedding layer: after so few steps its BatchNorm statistics lag far behind the backbone's features
    # and the embeddings collapse to near-ties (the long recipes have a 1536-d one)
    "model": {"options": {"width": 0.125, "sk_min_dim": 4, "pool": "gem", "embedding_dim": 0}},
    "data": {"source": "digits", "split_by": "class", "val_fraction": 0.5, "embedded": {"resolution": 32}},
    "augment": {"train_crop": "resize_random_crop", "eval_crop": "none", "hflip": False},
    "optim": {"lr": 0.1, "batch_size": 32, "weight_decay": 5e-4, "bn_momentum_rule": True},
    "schedule": {"epochs": 2},
    "regularization": {"label_smoothing": 0.0, "mixup": {"alpha": 0.0}},
    "retrieval": {"loss": "arcface", "scale": 16.0, "margin": 0.3,
                  "metrics": ["recall@1", "recall@4", "map@r"], "select": "recall@1"},
    "output": {"checkpoint_every_steps": 0, "log_every_steps": 5},
}


def invoke(tmp, *args, check: bool = True, **env):
    """`transfer ARGS` in this process (the training run above is a real subprocess; these reuse it)."""
    res = CliRunner().invoke(cli, [str(a) for a in args], prog_name="transfer",
                             env={"TRANSFER_CACHE": str(tmp / "cache"), **env})
    if check and res.exit_code != 0:
        raise AssertionError(f"transfer {' '.join(map(str, args))} exited {res.exit_code}:\n{res.output[-3000:]}")
    return res


def brute_recall_at_1(emb, labels, queries, gallery, tie=1e-5):
    """Recall@1 by a Python loop over float64 cosine similarities, as bounds: (hits where the nearest other
    item is same-class by more than `tie`, hits where a same-class item is within `tie` of the nearest).
    A barely trained tiny model puts many items at nearly equal similarity; float32 backends may order them
    either way."""
    emb = np.asarray(emb, np.float64)
    strict = loose = counted = 0
    for q in queries:
        others = [g for g in gallery if g != q]
        if not any(labels[g] == labels[q] for g in others):
            continue
        sims = {g: float(np.dot(emb[q], emb[g])) for g in others}
        same = max(v for g, v in sims.items() if labels[g] == labels[q])
        other = max((v for g, v in sims.items() if labels[g] != labels[q]), default=-np.inf)
        counted += 1
        strict += same > other + tie
        loose += same >= other - tie
    return strict / counted, loose / counted


def within(value, bounds):
    lo, hi = bounds
    assert hi - lo < 0.05, f"too many near-ties to check: {bounds}"
    return lo - 1e-9 <= value <= hi + 1e-9


# ---------------------------------------------------------------------------------------- heads and losses
def test_cosine_classifier_is_scaled_cosine():
    torch.manual_seed(0)
    head = CosineClassifier(6, 4, scale=16.0)
    x = torch.randn(3, 6)
    out = head(x)
    for i in range(3):
        for c in range(4):
            w = head.weight[c]
            cos = float((x[i] @ w / (x[i].norm() * w.norm())).detach())
            assert out[i, c].item() == pytest.approx(16.0 * cos, abs=1e-5)


def test_angular_margin_against_hand_formula():
    torch.manual_seed(1)
    s, m = 10.0, 0.3
    cos = torch.empty(5, 4).uniform_(-1, 1)
    cos[0, 2] = -0.99  # theta > pi - m: the linear fallback
    target = torch.tensor([2, 0, 3, 1, 2])
    out = angular_margin(s * cos, target, s, m)
    for i in range(5):
        for c in range(4):
            if c != target[i]:
                assert out[i, c].item() == pytest.approx(s * cos[i, c].item(), abs=1e-5)
                continue
            theta = math.acos(cos[i, c].item())
            expected = math.cos(theta + m) if theta + m <= math.pi else cos[i, c].item() - m * math.sin(m)
            assert out[i, c].item() == pytest.approx(s * expected, abs=1e-4)
            assert out[i, c].item() < s * cos[i, c].item()  # the margin always makes the target harder


# ---------------------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrieval")
    recipe = tiny_recipe(tmp, **RETRIEVAL)
    res = run_cli(tmp, "finetune", recipe, "--out", tmp / "run")
    return tmp, tmp / "run", res


def test_zero_shot_run_writes_everything(run):
    _, path, _ = run
    info = json.loads((path / "run.json").read_text())
    assert info["stage"] == "retrieval" and info["best_metric"] == "recall@1" and info["status"] == "finished"
    sidecar = json.loads((path / "weights" / "best.json").read_text())
    assert sidecar["class_names"] == ["0", "1", "2", "3", "4"]  # trained on digits 0-4 only
    assert sidecar["overrides"]["head"] == "cosine" and sidecar["input"]["eval_crop"] == "none"
    store = np.load(path / "retrieval" / "embeddings.npz")
    assert set(store["labels"].tolist()) == {5, 6, 7, 8, 9}  # searched on unseen digits 5-9
    emb = store["embeddings"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    metrics = json.loads((path / "retrieval" / "metrics.json").read_text())
    n = len(emb)
    assert within(metrics["recall@1"], brute_recall_at_1(emb, store["labels"], range(n), range(n)))
    assert metrics["exact"] is True and metrics["queries"] == n
    import faiss

    index = faiss.deserialize_index(np.fromfile(path / "retrieval" / "index.faiss", dtype=np.uint8))
    assert index.ntotal == n
    assert (path / "retrieval" / "grid.png").stat().st_size > 1000
    with (path / "retrieval" / "per_query.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == store["ids"].tolist()  # every item is a query, in order
    for name in ("recall@1", "recall@4", "map@r"):  # the means are the per-query values' means
        assert np.mean([float(r[name]) for r in rows]) == pytest.approx(metrics[name], abs=1e-6)
    assert {r["class"] for r in rows} == {"5", "6", "7", "8", "9"}
    val = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["kind"] == "val"]
    assert val and all("recall@1" in v and "map@r" in v for v in val)
    assert info["best"] == max(v["recall@1"] for v in val)


def test_retrieve_json_and_latest_run(run):
    tmp, path, _ = run
    res = invoke(tmp, "retrieve", "--eval", "recall@1,recall@2,precision@2", "--format", "json", "--backend",
                 "torch", "--out", tmp / "again", "--workers", "0", TRANSFER_RUNS=str(tmp))
    scores = json.loads(res.stdout)
    assert list(scores) == ["recall@1", "recall@2", "precision@2"]
    saved = json.loads((path / "retrieval" / "metrics.json").read_text())
    assert within(scores["recall@1"], brute_recall_at_1(*[np.load(tmp / "again" / "embeddings.npz")[k]
                                                          for k in ("embeddings", "labels")],
                                                        range(saved["queries"]), range(saved["queries"])))
    store = np.load(tmp / "again" / "embeddings.npz")
    emb, labels = store["embeddings"], store["labels"]
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    top2 = np.argsort(-sims, axis=1, kind="stable")[:, :2]
    assert scores["precision@2"] == pytest.approx(float((labels[top2] == labels[:, None]).mean()), abs=1e-3)


def test_retrieve_saved_embeddings_file(run, tmp_path):
    _, path, _ = run
    store = np.load(path / "retrieval" / "embeddings.npz")
    f = tmp_path / "e.npz"
    np.savez(f, embeddings=store["embeddings"] * 3.0, labels=store["labels"])  # not normalised: it will be
    res = invoke(tmp_path, "retrieve", "--embeddings", f, "--eval", "recall@1", "--format", "json")
    n = len(store["labels"])
    assert within(json.loads(res.stdout)["recall@1"],
                  brute_recall_at_1(store["embeddings"], store["labels"], range(n), range(n)))


def test_query_images_search_the_saved_gallery(run, tmp_path):
    """The neighbours returned are the nearest: the query embedded here through the public model API and
    scored against every saved gallery row by a float64 loop."""
    _, path, _ = run
    store = np.load(path / "retrieval" / "embeddings.npz")
    from sklearn.datasets import load_digits

    from transfer.models import load_model

    digit = load_digits().images[5 + 10 * 3]  # a real digit 5, at the demo's scale
    img = Image.fromarray((digit / 16 * 255).astype(np.uint8)).resize((32, 32)).convert("RGB")
    img.save(tmp_path / "q.png")
    res = invoke(tmp_path, "retrieve", path, "--query", tmp_path / "q.png", "--topk", "4", "--format", "json")
    (item,) = json.loads(res.stdout)
    assert [h["rank"] for h in item["neighbours"]] == [1, 2, 3, 4]

    model = load_model(path / "weights" / "best.safetensors").eval()
    with torch.no_grad():
        q = model.pool_features(model.preprocess(Image.open(tmp_path / "q.png").convert("RGB"))[None])[0]
    q = (q / q.norm()).double().numpy()
    gallery = np.flatnonzero(store["is_gallery"])
    sims = {str(store["ids"][g]): float(np.dot(q, store["embeddings"][g].astype(np.float64))) for g in gallery}
    best = sorted(sims.values(), reverse=True)
    for rank, hit in enumerate(item["neighbours"]):
        assert hit["score"] == pytest.approx(sims[hit["id"]], abs=1e-4)  # the id's own similarity
        assert hit["score"] == pytest.approx(best[rank], abs=1e-4)  # and the rank-th largest of all of them


def test_separate_query_and_gallery_from_a_csv_table(run, tmp_path):
    """The plain table (path, label, split, is_query, is_gallery): queries are searched against the gallery."""
    _, path, _ = run
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = []
    for i in range(60):
        name = f"img{i}.png"
        Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).convert("RGB").save(tmp_path / name)
        is_query = i % 3 == 0
        rows.append([name, str(digits.target[i]), "test", int(is_query), int(not is_query)])
    with (tmp_path / "table.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "is_query", "is_gallery"])
        w.writerows(rows)
    res = invoke(tmp_path, "retrieve", path / "weights" / "best.safetensors", "--data", tmp_path / "table.csv",
                 "--split", "test", "--eval", "recall@1", "--out", tmp_path / "out", "--workers", "0")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    store = np.load(tmp_path / "out" / "embeddings.npz")
    queries, gallery = np.flatnonzero(store["is_query"]), np.flatnonzero(store["is_gallery"])
    assert len(queries) == 20 and len(gallery) == 40 and metrics["gallery"] == 40
    assert within(metrics["recall@1"], brute_recall_at_1(store["embeddings"], store["labels"], queries, gallery))
    assert "recall@1" in res.stdout


# ---------------------------------------------------------------------------------------- errors
def test_one_line_errors(run, tmp_path):
    _, path, _ = run
    bad = tmp_path / "bad.npz"
    np.savez(bad, vectors=np.zeros((3, 2), np.float32))
    text = tmp_path / "notimage.png"
    text.write_text("not an image")
    empty_gallery = tmp_path / "eg.csv"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    empty_gallery.write_text("path,label,split,is_query,is_gallery\na.png,1,test,1,0\na.png,1,test,1,0\n")
    (tmp_path / "norun").mkdir()
    cases = [
        (["retrieve", "--embeddings", bad], "lacks the array(s) embeddings, labels"),
        (["retrieve", path, "--eval", "recal@1"], "unknown metric 'recal@1'"),
        (["retrieve", path, "--query", text], "could not be read"),
        (["retrieve", path / "weights" / "best.safetensors", "--data", empty_gallery, "--split", "test"],
         "the gallery is empty"),
        (["retrieve", tmp_path / "norun"], "has no weights yet"),
    ]
    cases.append((["retrieve"], "no retrieval run found"))
    for args, message in cases:
        res = invoke(tmp_path, *args, "--workers", "0", check=False, TRANSFER_RUNS=str(tmp_path / "none"))
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2, (args, res.output)
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, res.stderr)
    # and the same through a real interpreter, as a user runs it
    res = run_cli(tmp_path, "retrieve", "--embeddings", bad, check=False)
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and len(res.stderr.splitlines()) == 1


def test_recipe_checks(tmp_path):
    from transfer.errors import ConfigError
    from transfer.recipe import load_recipe
    from transfer.stages.tasks import check_retrieval_recipe as check_recipe

    r = load_recipe(tiny_recipe(tmp_path, **RETRIEVAL), {"retrieval": {"select": "recall@8"}})
    with pytest.raises(ConfigError, match=r"retrieval\.select='recall@8' is not among"):
        check_recipe(r)
    r = load_recipe(tiny_recipe(tmp_path, **RETRIEVAL), {"regularization": {"mixup": {"alpha": 0.2}}})
    with pytest.raises(ConfigError, match="arcface"):
        check_recipe(r)


@pytest.mark.parametrize("name", ["sop", "cub", "cars196_retrieval", "inshop", "demo/retrieval"])
def test_shipped_retrieval_recipes_validate(name):
    from transfer.recipe import load_recipe
    from transfer.recipes import find_recipe
    from transfer.stages.tasks import check_retrieval_recipe as check_recipe

    r = load_recipe(find_recipe(f"{name}.yaml"))
    assert r.stage == "retrieval"
    check_recipe(r)
    if name != "demo/retrieval":
        assert r.model.options["embedding_dim"] == 1536 and r.model.options["pool"] == "gem"
        assert r.optim.weight_decay == 5e-4 and r.optim.bn_momentum_rule
        assert r.augment.eval_crop == "none" and r.augment.eval_resolution == 256
    assert (r.retrieval.loss == "arcface") == (name in ("sop", "inshop"))
    assert os.path.basename(name) in str(find_recipe(f"{name}.yaml"))


def test_the_head_trains_on_relu_of_the_embedding_and_retrieval_embeds_the_bn_output(tmp_path):
    """As the official graph (nets/resnet_model.py:589-593): the classifier reads ReLU(BN(W x)), the embedding
    is BN(W x) itself; the model is built as the retrieval stage builds it, the references by hand."""
    from transfer.recipe import load_recipe
    from transfer.stages.tasks import Retrieval, StageData
    from transfer.stages.train import build_model

    def recipe(loss="cosine_softmax", **options):
        sections = {**RETRIEVAL, "model": {"options": {**RETRIEVAL["model"]["options"], "embedding_dim": 12,
                                                       **options}},
                    "retrieval": {**RETRIEVAL["retrieval"], "loss": loss}}
        return load_recipe(tiny_recipe(tmp_path, **sections))

    def built(**options):
        r = recipe(**options)
        torch.manual_seed(0)
        return build_model(r, Retrieval(r), StageData([], None, [f"c{i}" for i in range(5)]))[0]

    assert Retrieval(recipe("softmax")).head_options() == {"head": "linear", "embedding_relu": True}
    model = built()
    assert model.overrides["embedding_relu"] is True  # recorded in the weights files' sidecars
    x = torch.randn(4, 3, 32, 32)
    linear, bn = model.embedding
    model.train()
    features = model.pool(model.forward_features(x))
    emb = bn(linear(features))  # training-mode BN: the batch's statistics
    assert (emb < 0).any()  # so that the ReLU matters
    logits = model.fc(torch.relu(emb))
    assert torch.allclose(model(x), logits, atol=1e-5)
    assert not torch.allclose(model.fc(emb), logits, atol=1e-3)
    model.eval()
    by_hand = bn(linear(model.pool(model.forward_features(x))))
    assert torch.equal(model.pool_features(x), by_hand) and (by_hand < 0).any()

    plain = built(embedding_relu=False)  # the recipe's choice wins over the task's default
    assert torch.equal(plain.forward_head(by_hand), plain.fc(by_hand))
