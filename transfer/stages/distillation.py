"""Teacher logits for distillation: `transfer evaluate TEACHER --recipe RECIPE --save-logits FILE.npy`.

Row i of the file is the teacher's logits on the training's sample i: the index the training loader hands the
objective (`regularization.distillation.logits` reads row `indices`), which is the position in the task's own
training records (its split, label budget, zero-shot renumbering), not in the split on disk. So the records
come from the task itself. And column j must be the student's class j: the teacher's outputs are put in the
training's class order, matched by name or by the WordNet ids a data_prep folder records (timm's ImageNet
heads are in sorted-synset order, data_prep/imagenet.py's classes in the devkit's). TEACHER is this
package's weights or run, or `timm:NAME` with `--checkpoint FILE` (models/teachers.py), e.g. the paper's
EfficientNet-B7 as `timm:tf_efficientnet_b7`.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..recipe import load_recipe
from ..recipes import find_recipe
from .evaluation import check_class_count, check_options, open_model, output_columns, run_evaluation
from .tasks import task_for


def evaluate_on_training_images(weights_or_run: str, recipe_arg: str, *, data_path: str | None = None,
                                split: str | None = None, checkpoint: str | None = None, batch_size: int = 64,
                                device: str = "auto", workers: int = 2, save_logits: str | None = None) -> dict:
    """The model's metrics on the recipe's training images, and with `save_logits` its logits, one row per
    training sample in the training's order. `data_path` sets data.path, as --data does for training."""
    check_options(weights_or_run, batch_size=batch_size, save_logits=save_logits, checkpoint=checkpoint)
    if split is not None:
        raise ConfigError("--recipe evaluates the recipe's training images, in its training order; drop --split")
    recipe = load_recipe(find_recipe(recipe_arg), {"data": {"path": data_path}} if data_path else None)
    opened = open_model(weights_or_run, checkpoint)
    weights, model, _, classes, teacher = opened
    records = task_for(recipe).open_data().train
    where = f"the training images of {recipe_arg}"
    what = weights_or_run if teacher else weights
    check_class_count(what, model.num_classes, records, where)
    columns = output_columns(classes, records, recipe.data, what, where, strict=teacher is None)
    return run_evaluation(opened, records, recipe.data.train_split, batch_size=batch_size, device=device,
                          workers=workers, save_logits=save_logits, columns=columns)
