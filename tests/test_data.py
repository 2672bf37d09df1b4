"""Data: the embedded set, sources (disk, folder, hub layout), bad images, transforms, sampling."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from transfer.data import embedded
from transfer.data.loader import EpochBatchSampler, ShardSampler, TransformedDataset, collate, make_loader
from transfer.data.ondisk import DatasetWriter
from transfer.data.sources import BadImage, DataError, decode_tensor, open_split
from transfer.data.transforms import PAPER_MEAN, InputSpec, Normalize, TensorToPIL, takes_tensors
from transfer.recipe import AugmentSection, DataSection, EmbeddedSection


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_CACHE", str(tmp_path / "cache"))


def jpeg(color=(200, 30, 30), size=(20, 16), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, fmt)
    return buf.getvalue()


class TestEmbedded:
    def test_deterministic_for_a_seed_and_different_across_seeds(self):
        a, la = embedded.generate(5, 3, 32, seed=1)
        b, lb = embedded.generate(5, 3, 32, seed=1)
        c, _ = embedded.generate(5, 3, 32, seed=2)
        assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
        assert a.shape == (15, 32, 32, 3) and a.dtype == np.uint8
        assert np.bincount(la).tolist() == [3] * 5

    def test_cached_split_round_trips(self, tmp_path):
        x1, y1 = embedded.load_split(4, 2, 24, 0, "train")
        files = list((tmp_path / "cache" / "embedded").glob("*.npz"))
        assert len(files) == 1
        x2, y2 = embedded.load_split(4, 2, 24, 0, "train")
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
        xv, _ = embedded.load_split(4, 2, 24, 0, "validation")
        assert not np.array_equal(x1, xv)
        files[0].write_bytes(b"damaged")
        x3, _ = embedded.load_split(4, 2, 24, 0, "train")
        assert np.array_equal(x1, x3)

    def test_class_names(self):
        assert embedded.class_names(3) == ["disc", "square", "triangle"]
        assert embedded.class_names(20)[16] == "disc_stripes"
        assert len(set(embedded.class_names(64))) == 64

    def test_figure_is_brighter_than_ground(self):
        x, _ = embedded.generate(8, 4, 48, seed=0)
        lum = x.astype(float) @ np.array([0.299, 0.587, 0.114])
        assert (np.percentile(lum, 99, axis=(1, 2)) - np.percentile(lum, 1, axis=(1, 2)) > 60).all()


def write_folder(root, layout):
    for split, classes in layout.items():
        for cls, files in classes.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for name, data in files.items():
                (d / name).write_bytes(data)


class TestSources:
    def test_folder_labels_follow_the_training_classes(self, tmp_path):
        write_folder(tmp_path, {"train": {"b": {"1.jpg": jpeg()}, "a": {"2.png": jpeg(fmt="PNG"), "x.txt": b"no"}},
                                "validation": {"b": {"3.jpg": jpeg()}}})
        ds = DataSection(source="folder", path=str(tmp_path))
        train = open_split(ds, "train")
        assert train.classes == ["a", "b"] and train.labels.tolist() == [0, 1]
        val = open_split(ds, "validation", train.classes)
        assert val.labels.tolist() == [1] and val.load(0).size == (20, 16)

    def test_missing_dataset_says_where_it_looked_and_how_to_prepare(self, tmp_path):
        ds = DataSection(source="disk", path=str(tmp_path / "imagenet"),
                         prepare="python -m data_prep.imagenet --raw DIR --out data/imagenet")
        with pytest.raises(DataError) as err:
            open_split(ds, "train")
        msg = str(err.value)
        assert str(tmp_path / "imagenet") in msg and "python -m data_prep.imagenet" in msg and "\n" not in msg

    def test_disk_dataset_from_the_writer(self, tmp_path):
        w = DatasetWriter(tmp_path, "toy", ["red", "green"])
        w.write("train", "0", [jpeg(), jpeg((0, 200, 0))], [0, 1], ["r.jpg", "g.jpg"])
        w.write("train", "1", [jpeg((0, 210, 0))], [1], ["g2.jpg"])
        w.write("validation", "0", [jpeg()], [0], ["rv.jpg"])
        w.finish({"train": ["0", "1"], "validation": ["0"]})
        assert json.loads((tmp_path / "dataset.json").read_text())["classes"] == ["red", "green"]
        rec = open_split(DataSection(source="disk", path=str(tmp_path)), "train")
        assert rec.classes == ["red", "green"] and rec.labels.tolist() == [0, 1, 1]
        assert rec.ids == ["r.jpg", "g.jpg", "g2.jpg"]
        assert rec.load(1).getpixel((3, 3))[1] > 150
        with pytest.raises(DataError, match="no split 'test'"):
            open_split(DataSection(source="disk", path=str(tmp_path)), "test")

    def test_hub_loading_code_on_a_local_repository_in_hub_layout(self, tmp_path):
        import datasets

        features = datasets.Features({"image": datasets.Image(),
                                      "label": datasets.ClassLabel(names=["cat", "dog"])})
        table = datasets.Dataset.from_dict({"image": [{"bytes": jpeg(), "path": None}] * 3, "label": [0, 1, 1]},
                                           features=features)
        (tmp_path / "data").mkdir()
        table.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
        rec = open_split(DataSection(source="hub", path=str(tmp_path), val_split=""), "train")  # all of train
        assert rec.classes == ["cat", "dog"] and rec.labels.tolist() == [0, 1, 1]
        assert rec.load(2).mode == "RGB"
        assert torch.equal(rec.load_tensor(2), pil_to_tensor(rec.load(2)))
        with pytest.raises(DataError, match="no column 'img'"):
            open_split(DataSection(source="hub", path=str(tmp_path), image_column="img", val_split=""), "train")


class TestBadImages:
    def make(self, tmp_path):
        good = jpeg()
        write_folder(tmp_path, {"train": {"a": {"ok.jpg": good, "trunc.jpg": good[: len(good) // 2],
                                                "text.jpg": b"hello", "cmyk.jpg": jpeg(mode="CMYK"),
                                                "i16.png": jpeg(fmt="PNG", mode="I;16")}}})
        return open_split(DataSection(source="folder", path=str(tmp_path), val_split=""), "train")

    def test_skipped_and_reported_by_collate(self, tmp_path):
        rec = self.make(tmp_path)
        ds = TransformedDataset(rec, lambda im: torch.zeros(3, 2, 2))
        batch = collate([ds[i] for i in range(len(rec))])
        assert len(batch) == 2  # the JPEG and the CMYK one (converted)
        reasons = {b.ident.rsplit("/", 1)[-1]: b.reason for b in batch.bad}
        assert set(reasons) == {"trunc.jpg", "text.jpg", "i16.png"}
        assert "mode I;16" in reasons["i16.png"]

    def test_tensor_decoding_gives_pils_pixels_and_verdicts(self, tmp_path):
        """load_tensor decodes JPEGs without PIL; PIL's decoding is the reference for pixels and bad images."""
        rng = np.random.default_rng(0)
        noisy = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        files = {"ok.jpg": jpeg(), "grey.jpg": jpeg(mode="L"), "cmyk.jpg": jpeg(mode="CMYK"),
                 "png.jpg": jpeg(fmt="PNG"), "rgba.png": jpeg(fmt="PNG", mode="RGBA"), "trunc.jpg": jpeg()[:200],
                 "text.jpg": b"hello", "empty.jpg": b"", "i16.png": jpeg(fmt="PNG", mode="I;16")}
        for quality, subsampling in ((95, 0), (75, 2)):
            buf = io.BytesIO()
            noisy.save(buf, "JPEG", quality=quality, subsampling=subsampling, progressive=subsampling == 2)
            files[f"noisy{quality}.jpg"] = buf.getvalue()
        write_folder(tmp_path, {"train": {"a": files}})
        rec = open_split(DataSection(source="folder", path=str(tmp_path), val_split=""), "train")
        verdicts = 0
        for i, path in enumerate(rec.ids):
            try:
                reference = pil_to_tensor(rec.load(i))
            except BadImage:
                with pytest.raises(BadImage):
                    rec.load_tensor(i)
                verdicts += 1
                continue
            x = rec.load_tensor(i)
            assert x.dtype == torch.uint8 and torch.equal(x, reference), path
            assert torch.equal(decode_tensor(Path(path).read_bytes()), reference)  # from bytes (hub, disk)
        assert verdicts == 4  # trunc, text, empty, i16
        with pytest.raises(BadImage):
            decode_tensor(tmp_path / "missing.jpg")

    def test_an_all_bad_batch_is_empty(self, tmp_path):
        rec = self.make(tmp_path)
        ds = TransformedDataset(rec, lambda im: torch.zeros(1))
        bad = [i for i, p in enumerate(rec.ids) if p.endswith(("text.jpg", "trunc.jpg"))]
        assert len(collate([ds[i] for i in bad])) == 0


class TestTransforms:
    def test_sizes_and_normalisation(self):
        spec = InputSpec(224, 256, 292)
        prep = spec.resolve(AugmentSection())
        assert (prep.train_resolution, prep.eval_resolution, prep.eval_resize) == (224, 256, 292)
        img = Image.new("RGB", (400, 300), (255, 0, 0))
        assert prep.eval_transform()(img).shape == (3, 256, 256)
        assert prep.train_transform(AugmentSection(autoaugment="imagenet"))(img).shape == (3, 224, 224)
        paper = spec.resolve(AugmentSection(normalization="mean_only", eval_resolution=128))
        assert paper.eval_resize == round(128 / 0.875)
        x = paper.eval_transform()(Image.new("RGB", (200, 200), (255, 128, 0)))
        torch.testing.assert_close(x[:, 0, 0], torch.tensor([255 - PAPER_MEAN[0] * 255, 128 - PAPER_MEAN[1] * 255,
                                                            0 - PAPER_MEAN[2] * 255]), rtol=0, atol=1e-3)

    def test_normalize_matches_torchvision_on_any_layout(self):
        from torchvision.transforms import v2 as T

        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        reference = T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
        hwc = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        for x in (hwc[0].permute(2, 0, 1), hwc[0].permute(2, 0, 1).contiguous(), hwc.movedim(-1, -3)):
            y = Normalize(mean, std)(x)
            assert y.dtype == torch.float32 and y.is_contiguous()
            torch.testing.assert_close(y, reference(x.contiguous()), rtol=0, atol=1e-5)
        assert x.dtype == torch.uint8  # the input is not modified in place

    def test_tensor_to_pil_round_trips_any_layout(self):
        hwc = torch.randint(0, 256, (6, 9, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        for x in (hwc.permute(2, 0, 1), hwc.permute(2, 0, 1).contiguous(), hwc.permute(2, 0, 1)[:, 1:5, 2:7]):
            img = TensorToPIL()(x)
            assert img.mode == "RGB" and img.size == (x.shape[2], x.shape[1])
            assert torch.equal(pil_to_tensor(img), x)

    @pytest.mark.parametrize("policy", ["none", "imagenet", "official_good"])
    def test_pipelines_give_the_same_output_for_a_tensor_or_a_pil_image(self, policy):
        """Datasets hand tensor-first pipelines the decoded tensor instead of the PIL image: nothing changes."""
        aug = AugmentSection(autoaugment=policy)
        prep = InputSpec(24, 24, 28).resolve(aug)
        rng = np.random.default_rng(1)
        img = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
        for transform in (prep.train_transform(aug), prep.eval_transform()):
            assert takes_tensors(transform)
            outs = []
            for x in (img, pil_to_tensor(img)):
                torch.manual_seed(5)
                outs.append(transform(x))
            assert torch.equal(*outs)

    @pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
    @pytest.mark.parametrize("eval_crop", ["center", "none"])
    def test_tensor_resampling_agrees_with_pil(self, interpolation, eval_crop):
        """Evaluation resizes a uint8 tensor; torchvision's PIL pipeline with the same sizes is the reference."""
        import torchvision.transforms as classic

        rng = np.random.default_rng(0)
        smooth = np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((10, 10, 1))).astype(np.uint8)  # 300x400
        img = Image.fromarray(smooth)
        prep = InputSpec(224, 224, 256).resolve(AugmentSection(interpolation=interpolation, eval_crop=eval_crop))
        mode = getattr(classic.InterpolationMode, interpolation.upper())
        size = (224, 224) if eval_crop == "none" else 256
        reference = classic.Compose([classic.Resize(size, mode), classic.CenterCrop(224), classic.ToTensor(),
                                     classic.Normalize(prep.mean, prep.std)])
        ours, theirs = prep.eval_transform()(img), reference(img)
        std = torch.tensor(prep.std).view(3, 1, 1)
        levels = ((ours - theirs) * std * 255).abs()  # in grey levels: almost all equal, none off by more than 2
        assert ours.shape == theirs.shape and levels.mean() < 0.05 and levels.max() < 2.01

    @pytest.mark.parametrize("policy", ["imagenet", "official_imagenet", "official_good"])
    def test_augmentation_is_a_function_of_seed_epoch_index(self, policy):
        rec = open_split(DataSection(embedded=EmbeddedSection(2, 2, 1, 32)), "train")
        prep = InputSpec(24, 32, 32).resolve(AugmentSection(autoaugment=policy))
        ds = TransformedDataset(rec, prep.train_transform(AugmentSection(autoaugment=policy)), seed=3)
        a, b = ds[(1, 5)][0], ds[(1, 5)][0]
        assert torch.equal(a, b) and not torch.equal(a, ds[(1, 6)][0])
        state = torch.get_rng_state()
        ds[(0, 0)]
        assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched

    def test_augmentation_seeds_are_their_own_domain_not_a_training_steps(self):
        from transfer.runtime import derive_seed

        class Draw:  # a transform that records the first number it draws
            def __call__(self, image):
                return torch.rand(())

        rec = open_split(DataSection(embedded=EmbeddedSection(2, 2, 1, 32)), "train")
        ds = TransformedDataset(rec, Draw(), seed=3)
        expected = torch.rand((), generator=torch.Generator().manual_seed(derive_seed(3, "augment", 5, 0)))
        assert ds[(0, 5)][0] == expected
        # step s on rank 0 and image 0 of epoch s once drew from one seed; the domains keep every kind apart
        grid = [(d, a, b) for d in ("augment", "order", "step") for a in range(20) for b in range(3)]
        seeds = {derive_seed(3, d, a, b) for d, a, b in grid}
        assert len(seeds) == len(grid)
        assert derive_seed(3, "step", 5, 0) != derive_seed(3, "augment", 5, 0)


class TestSampling:
    def test_epoch_permutation_and_resume_offset(self):
        s = EpochBatchSampler(50, 4, seed=1, accumulation=2)
        assert s.steps_per_epoch == 6 and len(s) == 12
        s.set_epoch(3)
        full = list(s)
        s.set_epoch(3, start_micro_batch=4)
        assert list(s) == full[4:]
        s.set_epoch(4)
        assert list(s) != full
        flat = [i for b in full for i, _ in b]
        assert len(set(flat)) == 48 and all(e == 3 for b in full for _, e in b)

    def test_epoch_repeats_pass_over_every_image_that_many_times_with_a_key_per_pass(self):
        s = EpochBatchSampler(10, 5, seed=3, repeats=3)
        assert s.steps_per_epoch == 6
        s.set_epoch(2)
        items = [key for b in s for key in b]
        assert sorted(i for i, _ in items) == sorted(list(range(10)) * 3)
        # each image once per pass, the passes keyed 6, 7, 8: its augmentation seeds differ between passes
        by_pass = {p: sorted(i for i, q in items if q == p) for p in (6, 7, 8)}
        assert by_pass == {p: list(range(10)) for p in (6, 7, 8)}
        assert len(set(items)) == 30
        # the passes are shuffled together, not one after the other
        assert [q for _, q in items[:10]] != [6] * 10
        assert EpochBatchSampler(10, 5, seed=3).steps_per_epoch == 2

    def test_processes_see_the_micro_batches_of_one_process_with_more_accumulation(self):
        one = EpochBatchSampler(64, 4, seed=7, world=1, accumulation=4)
        ranks = [EpochBatchSampler(64, 4, seed=7, rank=r, world=2, accumulation=2) for r in range(2)]
        for s in (one, *ranks):
            s.set_epoch(2)
        single = list(one)
        per_rank = [list(s) for s in ranks]
        for step in range(one.steps_per_epoch):
            assert single[4 * step:4 * step + 2] == per_rank[0][2 * step:2 * step + 2]
            assert single[4 * step + 2:4 * step + 4] == per_rank[1][2 * step:2 * step + 2]

    def test_shard_sampler_covers_every_index_once(self):
        got = [i for r in range(3) for b in ShardSampler(10, 3, rank=r, world=3) for i in b]
        assert got == list(range(10))

    def test_loader_with_workers_gives_the_same_batches(self):
        rec = open_split(DataSection(embedded=EmbeddedSection(2, 8, 1, 32)), "train")
        prep = InputSpec(24, 32, 32).resolve(AugmentSection())
        ds = TransformedDataset(rec, prep.train_transform(AugmentSection()), seed=0)

        def batches(workers):
            s = EpochBatchSampler(len(ds), 4, seed=0)
            s.set_epoch(1)
            return [b.images for b in make_loader(ds, s, workers)]

        for a, b in zip(batches(0), batches(2), strict=True):
            assert torch.equal(a, b)


def test_labelled_subset_takes_n_per_class_seeded_and_nests():
    from transfer.data.sources import ArrayRecords, labelled_subset

    labels = np.repeat(np.arange(4), [3, 10, 10, 10])
    rec = ArrayRecords(labels, [f"i{k}" for k in range(len(labels))], list("abcd"),
                       np.zeros((len(labels), 2, 2, 3), np.uint8))
    five = labelled_subset(rec, 5, seed=1)
    assert np.bincount(five.labels).tolist() == [3, 5, 5, 5]  # a class with fewer keeps all it has
    assert isinstance(five, ArrayRecords) and len(five.images) == len(five.labels)
    assert set(labelled_subset(rec, 2, seed=1).ids) <= set(five.ids)  # the budgets nest
    assert labelled_subset(rec, 5, seed=1).ids == five.ids and labelled_subset(rec, 5, seed=2).ids != five.ids
    for ident, y in zip(five.ids, five.labels, strict=True):  # each kept image keeps its own label
        assert labels[int(ident[1:])] == y


def test_glyphs_are_formed_as_the_digits_are():
    from sklearn.datasets import load_digits

    x, y = embedded.generate(12, 3, 32, 0, "glyphs")
    assert x.shape == (36, 32, 32, 3) and (y == np.tile(np.arange(12), 3)).all()
    x2, _ = embedded.generate(12, 3, 32, 0, "glyphs")
    assert (x == x2).all()
    # the classes are the alphabet's, whatever the split's seed: the strokes depend on the class alone
    assert all((a == b).all() for a, b in zip(embedded.glyph_strokes(5), embedded.glyph_strokes(5), strict=True))
    counts = embedded.glyph_counts(3, np.random.default_rng(0))
    assert counts.shape == (8, 8) and counts.dtype == np.uint8 and counts.max() <= 16 and counts.sum() > 0
    # the same image formation as the digits task: ink counts 0-16 through one function
    d = load_digits().images[:4]
    ref = np.stack([np.asarray(Image.fromarray((im / 16 * 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
                    for im in d])
    assert (embedded.counts_to_image(d, 32)[..., 0] == ref).all()


def test_a_label_budget_trains_on_n_digits_per_class_and_validates_on_all():
    from transfer.recipe import DataSection, EmbeddedSection, Recipe
    from transfer.stages.tasks import Classification

    recipe = Recipe()
    recipe.data = DataSection(source="digits", val_fraction=0.3, labels_per_class=5,
                              embedded=EmbeddedSection(resolution=16))
    data = Classification(recipe).open_data()
    assert np.bincount(data.train.labels).tolist() == [5] * 10
    assert len(data.val) == 540  # the held-out 30% of 1,797, untouched by the budget
    full = Classification(Recipe(data=DataSection(source="digits", val_fraction=0.3,
                                                  embedded=EmbeddedSection(resolution=16)))).open_data()
    kept = {i: y for i, y in zip(full.train.ids, full.train.labels, strict=True)}
    # a part of the train split, each image with its own label
    assert all(kept[i] == y for i, y in zip(data.train.ids, data.train.labels, strict=True))


def test_more_shape_classes_than_there_are_is_one_line_naming_glyphs():
    from transfer.recipe import DataSection, EmbeddedSection

    with pytest.raises(DataError, match=r"embedded shapes have at most 64 classes; lower it, or set "
                                        r"data.embedded.kind=glyphs"):
        open_split(DataSection(embedded=EmbeddedSection(classes=100, resolution=16)), "train")
    assert len(open_split(DataSection(embedded=EmbeddedSection(classes=100, train_per_class=1, resolution=16,
                                                               kind="glyphs")), "train").classes) == 100
