"""The reproduction's datasets and feature caches: where each run's data is, and building it once.

A dataset is built from the converter's arguments the plan gives it (and
refused if a folder holds one built from others); a feature cache, from the
frozen backbone of the model a run starts from.
"""

import os
from typing import Any, Callable

import keras

from nlr_tf.data import files
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.data.subsets import nested_split_name
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.plan import Run, dataset_fractions, source_cell
from nlr_tf.reproduce.rows import SHORT, USER_DATA
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.model_dir import load_trained_model, resolve_checkpoint
from tfrecords_tools import CONVERTER_VERSION

DATA_SEED = 0  # one benchmark dataset; the seeds vary training


class ReproduceError(RuntimeError):
    """A reproduction that cannot go on."""


def dataset_dir(output_dir: str, variant: str, benchmark: str = "scratch") -> str:
    """A run's dataset: the source task's glyphs, or digits_mosaic (multi-label: one per benchmark, as the
    transfer benchmark's noisy labels come from the source classifier; single-label: one for both)."""
    if variant == "source":
        return os.path.join(output_dir, "data", "glyphs")
    if benchmark == USER_DATA:  # nlr-compare: the user's dataset with its clean-label budgets
        return os.path.join(output_dir, "data", "budgets")
    suffix = "_transfer" if benchmark == "transfer" and variant == "multi_label" else ""
    return os.path.join(output_dir, "data", f"digits_mosaic_{SHORT[variant]}{suffix}")


def dataset_arguments(budget: Budget, variant: str, benchmark: str = "scratch") -> dict[str, Any]:
    """The converter's arguments of a run's dataset (recorded in its dataset.json, and in the plan's fingerprint)."""
    if benchmark == USER_DATA:
        return budget.user.arguments()
    if variant == "source":
        train, val, test = budget.source_sizes
        return {"source": "glyphs", "seed": DATA_SEED, "num_train": train, "num_val": val, "num_test": test}
    sizes = budget.dataset_sizes or (None, None, None)
    arguments = {
        "source": "digits_mosaic",
        "variant": variant,
        "clean_fraction": budget.main_fraction,
        "nested_clean_fractions": list(dataset_fractions(budget, variant)),
        "seed": DATA_SEED,
        "num_train": sizes[0],
        "num_val": sizes[1],
        "num_test": sizes[2],
    }
    if benchmark == "transfer" and variant == "multi_label":
        # The annotator is the source run (its path inside the output folder) and how many predictions it keeps.
        arguments.update(annotator=source_cell(), annotator_top_k=budget.annotator_top_k)
    return arguments


def build_dataset(
    output_dir: str, budget: Budget, variant: str, benchmark: str, log: Callable[[str], None], annotator_dir: str = ""
) -> str:
    """Writes one dataset of the plan unless it is already there (with the same arguments); returns its path."""
    from tfrecords_tools.writer import write_dataset

    path = dataset_dir(output_dir, variant, benchmark)
    arguments = dataset_arguments(budget, variant, benchmark)
    if files.isfile(os.path.join(path, "dataset.json")):
        provenance = load_dataset_info(path).provenance
        if provenance.get("arguments") == arguments and provenance.get("converter_version") == CONVERTER_VERSION:
            return path
        raise ReproduceError(f"{path} holds a dataset built with other settings: use another --output_dir")
    log(f"building {path}")
    if benchmark == USER_DATA:
        from nlr_tf.data.clean_budgets import describe, write_clean_budgets

        user = budget.user
        _, report = write_clean_budgets(
            user.path,
            path,
            user.clean_subsets,
            seed=user.subset_seed,
            val_from_clean=user.val_from_clean,
            test_from_clean=user.test_from_clean,
            provenance={"arguments": arguments, "converter_version": CONVERTER_VERSION},
        )
        for line in describe(report):
            log(f"  {line}")
        return path
    if variant == "source":
        from tfrecords_tools import glyphs

        conversion = glyphs.convert(
            seed=DATA_SEED,
            num_train=arguments["num_train"],
            num_val=arguments["num_val"],
            num_test=arguments["num_test"],
        )
    else:
        from tfrecords_tools import digits_mosaic

        annotator = None
        if "annotator" in arguments:
            from nlr_tf.evaluation.annotator import RunAnnotator

            annotator = RunAnnotator(annotator_dir, dataset=dataset_dir(output_dir, "source"))
        conversion = digits_mosaic.convert(
            variant,
            budget.main_fraction,
            DATA_SEED,
            arguments["num_train"],
            arguments["num_val"],
            arguments["num_test"],
            nested_fractions=tuple(arguments["nested_clean_fractions"]),
            annotator=annotator,
            annotator_top_k=arguments.get("annotator_top_k", 0),
        )
    write_dataset(conversion, path, arguments=arguments, progress=False)
    keras.backend.clear_session()
    return path


def build_datasets(output_dir: str, budget: Budget, variants, log: Callable[[str], None]) -> None:
    """Writes the datasets that need no trained model: every benchmark's but the transfer multi-label one (which
    the source run annotates, so `run_plan` writes it once that run has finished)."""
    for benchmark in budget.benchmarks:
        for variant in (("source",) if benchmark == "transfer" else ()) + tuple(variants):
            if not (benchmark == "transfer" and variant == "multi_label"):
                build_dataset(output_dir, budget, variant, benchmark, log)


def features_cell(run: Run) -> str:
    """The cell of the model whose feature cache a run reads: the one it starts from (heads, reference rows),
    else the seed's noisy model (CleanNet's reference features)."""
    return run.init if run.row.stage in ("heads", "reference") else run.noisy_cell


def feature_cache_dir(output_dir: str, run: Run) -> str:
    """One cache per seed: the frozen noisy backbone's features of every split the heads use."""
    return os.path.join(output_dir, "runs", features_cell(run), "features")


def needs_feature_cache(run: Run) -> bool:
    return run.row.stage in ("heads", "reference") or run.row.method == "cleannet"


def build_feature_cache(output_dir: str, run: Run, noisy_dir: str, budget: Budget, log: Callable[[str], None]) -> bool:
    """What `nlr-extract-features` does, for the splits the heads train and are evaluated on; False if the cache
    was there already."""
    from nlr_tf.data.feature_cache import extract_features

    path = feature_cache_dir(output_dir, run)
    if files.isfile(os.path.join(path, "dataset.json")):
        return False
    log(f"extracting features of {noisy_dir}")
    backbone, run_config = _final_backbone(noisy_dir)
    splits = ["noisy", "val", "test"] + [nested_split_name(f) for f in dataset_fractions(budget, run.variant)]
    extract_features(
        backbone,
        load_dataset_info(dataset_dir(output_dir, run.variant, run.benchmark)),
        path,
        backbone_name=run_config["backbone"],
        backbone_source=resolve_checkpoint(noisy_dir)[0],
        image_size=run_config.get("image_size", 0),
        splits=splits,
        progress=False,
    )
    keras.backend.clear_session()
    return True


def _final_backbone(model_dir: str) -> tuple[keras.Model, dict[str, Any]]:
    """The backbone of a run's final model, and its run config.

    A run saved before method models were functional (its `model.keras`
    does not load): the backbone rebuilt and read from the checkpoint of
    its final weights.
    """
    from nlr_tf.backbones.networks import build_backbone
    from nlr_tf.training.checkpoints import restore_parts

    run_config = run_files.read_run_config(model_dir) or {}
    if run_config.get("model_format", 1) == run_files.MODEL_FORMAT:
        model, run_config = load_trained_model(model_dir)
        return model.backbone, run_config
    backbone = build_backbone(run_config["backbone"], "none", run_config.get("image_size", 0), trainable=False)
    restore_parts({"backbone": backbone}, model_dir)
    return backbone, run_config
