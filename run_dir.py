"""A model directory's contract: what runs may create, read and write there.

* `config.yaml` — the resolved config (label map included) after a `version: 1` line,
  written by the training run that creates the directory (or the first one to train in it)
  and never overwritten afterwards. Eval, export and inference only read it.
* `eval_history.json` — every evaluation, keyed by what was evaluated: the validation set
  (`EvalSet`: record files by name and size, the ground-truth json by content hash, and
  `eval_samples`) and the checkpoint step. An evaluation on another set gets its own entry and
  never replaces one of another set.
* `archive/` — the best checkpoint by AP on the archive set: the validation set of the first
  run that evaluated while training (train_and_eval, or train with --eval_after_training), or
  of the first eval. Evaluations on any other set are never archived.
* `runs/` — one record per run: its options, its config and when it started.

Files are replaced atomically (outputs.write_file: a temporary name, then a rename). What no
other run may write over is stated here too: `other_run_problem` refuses a directory that holds
another run's checkpoint or config.yaml, and `checkpoint_inputs` lists the files a run reading a
checkpoint reads, so that no output lands on them. A read-only directory can still be evaluated
(nothing is recorded; see `is_writable`), and a training run that fails before its first step
removes what it created (`StartedFiles`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import yaml
from absl import logging

import checkpoint_io
import hparams_config
import outputs
from dataset import label_maps
from hparams_config import Config, HparamsError

HISTORY_FILE = "eval_history.json"
ARCHIVE_DIR = "archive"
BEST_FILE = "best_eval.json"
RUNS_DIR = "runs"
_FORMAT = 2
# Entries written before validation sets were tracked (a flat {step: metrics} file).
LEGACY_SET = "unknown-set"
# The index file naming a directory's latest checkpoint (written by tf.train savers).
CHECKPOINT_STATE = "checkpoint"


# -------------------------------------------------------------------------------------------------
# config.yaml: the config a directory's model was trained with
# -------------------------------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"

# Keys that may differ between a model directory's saved config and a later run on it: they
# change neither the variables nor the data the model was trained on. Everything else is the
# model, and a run that disagrees with the saved value stops before building anything.
RUNTIME_KEYS = ("nms_configs", "label_map", "num_epochs")
# Eval, export and inference may also run at another input size or precision than training
# did (the variables are the same; e.g. export at 1920x1280 a model trained at 512).
INFERENCE_RUNTIME_KEYS = RUNTIME_KEYS + ("image_size", "precision")
# Keys of older config.yaml files that are no longer hparams (run options now); ignored on read.
_RETIRED_KEYS = ("use_tpu", "strategy")


def config_path(model_dir: str) -> str:
    """Where a model directory keeps the config it was trained with."""
    return os.path.join(model_dir, CONFIG_FILE)


def write_config(directory: str, config: Config) -> str:
    """Write `directory`/config.yaml (`hparams_config.config_file_text`: `version: 1`, then
    every key); returns its path. Callers decide whether a file may be written there."""
    return outputs.write_file(config_path(directory), hparams_config.config_file_text(config))


def read_saved_config(model_dir: Optional[str], model_name: Optional[str] = None
                      ) -> Optional[Config]:
    """The config saved in `model_dir` (gs:// works), or None when it has none.

    `model_name` None means "whatever the directory was trained as"; a different name is an
    error naming both.
    """
    if not model_dir:
        return None
    path = config_path(model_dir)
    if not tf.io.gfile.exists(path):
        return None
    saved = hparams_config.read_yaml(path)
    for key in _RETIRED_KEYS:
        saved.pop(key, None)
    name = saved.get("name") or model_name
    if model_name and name != model_name:
        raise HparamsError(
            f"'{path}' was written for {name}, but --model_name is {model_name}; pass "
            f"--model_name={name}.")
    if name not in hparams_config.efficientdet_model_param_dict:
        raise HparamsError(f"'{path}': unknown model name {name!r}.")
    config = hparams_config.get_efficientdet_config(name)
    try:
        config.override(saved, allow_new_keys=False)
        return hparams_config.validate(config)
    except HparamsError as e:  # name the file: the user did not type these values
        raise HparamsError(f"'{path}': {e}") from None


def differences(a: Config, b: Config, prefix: str = "") -> List[Tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every key whose values differ; nested keys dotted."""
    out = []
    for key in list(a.keys()) + [k for k in b.keys() if k not in a]:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Config) and isinstance(vb, Config):
            out.extend(differences(va, vb, prefix + key + "."))
        elif _yaml_form(va) != _yaml_form(vb):
            out.append((prefix + key, va, vb))
    return out


def _yaml_form(value: Any) -> Any:
    """Values as they compare after a YAML round trip (tuples are lists, mappings dicts)."""
    if isinstance(value, Config):
        value = value.as_dict()
    return hparams_config.to_yamlable(value)


def check_against_saved(saved: Config, config: Config, model_dir: str,
                        may_differ: Sequence[str]) -> None:
    """Stop with one line when `config` disagrees with the saved one on a model key.

    `may_differ` lists top-level keys (see RUNTIME_KEYS) that are allowed to differ.
    """
    bad = [(k, a, b) for k, a, b in differences(saved, config)
           if k.split(".")[0] not in may_differ]
    if bad:
        listed = "; ".join(f"{k}: trained with {a!r}, given {b!r}" for k, a, b in bad)
        raise HparamsError(
            f"--hparams disagree with {config_path(model_dir)} on what the model is: {listed}. "
            f"Drop them (the saved values are used), or train into a new --model_dir. Only "
            f"{', '.join(may_differ)} may differ.")


def load_run_config(model_name: Optional[str],
                    overrides: Union[str, Mapping[str, Any], None] = None,
                    model_dir: Optional[str] = None, training: bool = False) -> Config:
    """The config of a run: `model_dir/config.yaml` when it exists (written by training), else
    the `model_name` preset; then `overrides`. Validated.

    With a saved config, overrides may change only the runtime keys (INFERENCE_RUNTIME_KEYS, or
    RUNTIME_KEYS when `training` resumes the directory); any other difference is an error that
    lists each key with both values, raised before anything is built.
    """
    saved = read_saved_config(model_dir, model_name)
    if saved is None:
        if not model_name:
            raise HparamsError("no model name: pass --model_name (e.g. efficientdet-d0).")
        config = hparams_config.get_efficientdet_config(model_name)
        config.override(overrides)
        return _resolve_label_map(hparams_config.validate(config))
    config = Config(saved.as_dict())
    config.override(overrides)
    _resolve_label_map(config)
    # Disagreement first: it names every differing key, where validate would name one symptom.
    check_against_saved(saved, config, model_dir,
                        RUNTIME_KEYS if training else INFERENCE_RUNTIME_KEYS)
    if _yaml_form(saved.label_map) != _yaml_form(config.label_map):
        logging.info("label_map differs from %s's: this run names the classes %s; "
                     "config.yaml keeps its own.", config_path(model_dir), config.label_map)
    return hparams_config.validate(config)


def _resolve_label_map(config: Config) -> Config:
    """A `label_map` given as a built-in name or a file path, read into {id: name} (its ids
    checked against num_classes, the file named on error), so that it compares with a saved
    config's mapping and the config no longer depends on the file. Returns `config`."""
    if isinstance(config.label_map, str):
        config.label_map = label_maps.resolve(config.label_map, config.num_classes)
    return config


def config_dir(path: Optional[str]) -> Optional[str]:
    """The directory whose config.yaml describes `path` (a model or SavedModel directory, or a
    checkpoint prefix or model file inside one), or None. Read through tf.io.gfile (gs:// too).
    """
    if not path or path == "_":
        return None
    directory = path if tf.io.gfile.isdir(path) else os.path.dirname(path) or "."
    return directory if tf.io.gfile.exists(config_path(directory)) else None


def inference_config(model_name: Optional[str], overrides: Optional[str],
                     ckpt_path: Optional[str] = None, exported_model: Optional[str] = None,
                     restores: bool = False) -> Config:
    """The config of a run on a trained or exported model, for inference (batch norm frozen):
    `model_name`'s preset, or the config.yaml beside `exported_model` (an export knows its
    model, whatever `model_name` says), else in `ckpt_path`'s directory; then `overrides`;
    validated. When the run `restores` `ckpt_path`, the checkpoint is compared with the config
    (one line naming the model it looks like). All before any graph is built."""
    beside = config_dir(exported_model) if exported_model else None
    config = load_run_config(None if beside else model_name, overrides,
                             beside or config_dir(ckpt_path))
    if restores and ckpt_path and ckpt_path != "_":
        checkpoint_io.check_detector_fits(checkpoint_io.resolve_checkpoint(ckpt_path), config,
                                          f"--ckpt_path={ckpt_path}")
    config.is_training_bn = False
    return config


# -------------------------------------------------------------------------------------------------
# Where a model directory may be
# -------------------------------------------------------------------------------------------------
def is_writable(path: str) -> bool:
    """Whether this process may create files in existing directory `path` (remote paths such
    as gs:// are taken as writable: their writes fail with their own error)."""
    return "://" in path or os.access(path, os.W_OK | os.X_OK)


def directory_problem(path: str, writes: bool) -> Optional[str]:
    """Why `path` cannot be used as a run's directory (None if it can); creates nothing.

    Any run needs a directory, not a file. A run that `writes` (training into --model_dir)
    must also be able to write into it, or to create it (outputs.output_problem). Eval only
    reads --model_dir: a read-only one is evaluated without recording anything.
    """
    if writes:
        return outputs.output_problem(path, directory=True)
    if not outputs.is_remote(path) and os.path.isfile(path):
        return "is a file, not a directory"
    return None


# -------------------------------------------------------------------------------------------------
# What other runs may not touch
# -------------------------------------------------------------------------------------------------
def other_run_problem(directory: str) -> Optional[str]:
    """Why `directory` must not receive a checkpoint or config.yaml: it already holds those of
    another run (training or an earlier dry run). None when it is new or holds neither."""
    if not tf.io.gfile.isdir(directory):
        return None
    names = tf.io.gfile.listdir(directory)
    found = sorted({n.rstrip("/") for n in names
                    if n == CONFIG_FILE or n == CHECKPOINT_STATE or n.endswith(".index")})
    if not found:
        return None
    return (f"already holds {', '.join(found[:3])} of another run; choose a new or empty "
            f"directory (nothing was overwritten)")


def _is_run_file(name: str) -> bool:
    """Whether a file name in a model directory is one of a run's: checkpoint files, the
    checkpoint state, config.yaml, the eval history."""
    return (name in (CHECKPOINT_STATE, CONFIG_FILE, HISTORY_FILE) or name.endswith(".index")
            or ".data-" in name)


def checkpoint_inputs(ckpt_path: str) -> List[str]:
    """The files a run restoring `ckpt_path` (a prefix or a directory) reads, and the run files
    beside them in its model directory (every checkpoint, 'checkpoint', config.yaml,
    eval_history.json): no output may land on them, not even with --overwrite."""
    prefix = checkpoint_io.checkpoint_prefix(ckpt_path)
    found = set(tf.io.gfile.glob(prefix + ".*"))
    directories = {os.path.dirname(prefix) or "."}
    if tf.io.gfile.isdir(ckpt_path):
        directories.add(ckpt_path)
    for directory in directories:
        found.update(os.path.join(directory, n) for n in tf.io.gfile.listdir(directory)
                     if _is_run_file(n))
    return sorted(found)


# -------------------------------------------------------------------------------------------------
# eval history, archive and run records
# -------------------------------------------------------------------------------------------------
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------------
# What was evaluated
# -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalSet:
    """The identity of a validation set, stable when the dataset directory moves."""

    records: tuple  # ((basename, size in bytes), ...) sorted
    val_json: Optional[str]  # basename of the ground-truth json, if any
    val_json_sha256: Optional[str]
    eval_samples: int

    @classmethod
    def describe(cls, record_files: List[str], val_json_file: Optional[str],
                 eval_samples: int) -> EvalSet:
        records = tuple(sorted((os.path.basename(f), int(tf.io.gfile.stat(f).length))
                               for f in record_files))
        json_sha = _sha256(val_json_file) if val_json_file else None
        return cls(records, os.path.basename(val_json_file) if val_json_file else None, json_sha,
                   int(eval_samples))

    @property
    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def summary(self) -> Dict[str, Any]:
        names = [r[0] for r in self.records]
        return {"records": names[:4] + (["..."] if len(names) > 4 else []),
                "num_record_files": len(names), "bytes": sum(r[1] for r in self.records),
                "val_json": self.val_json, "val_json_sha256": self.val_json_sha256,
                "eval_samples": self.eval_samples}


# -------------------------------------------------------------------------------------------------
# config.yaml and run records
# -------------------------------------------------------------------------------------------------
def create_for_training(model_dir: str, config: Config) -> bool:
    """Create `model_dir` if needed and write `config.yaml` if it has none; True if written.

    A directory that already holds a config keeps it byte for byte: the caller has checked
    (load_run_config) that the run agrees with it on every model key.
    """
    tf.io.gfile.makedirs(model_dir)
    path = config_path(model_dir)
    if tf.io.gfile.exists(path):
        return False
    write_config(model_dir, config)
    return True


# What a training run writes into its model directory (relative paths): what `StartedFiles`
# may remove when the run fails before its first step.
_TRAINING_OUTPUT = re.compile(
    r"(config\.yaml|checkpoint|graph\.pbtxt|model\.ckpt-[^/]*|events\.out\.tfevents\.[^/]*|"
    r"runs/[^/]*\.yaml|(runs/)?\.[^/]*\.tmp-[0-9a-f]+[^/]*)(/.*)?")  # outputs.temporary_name


def _files_under(directory: str) -> List[str]:
    """Every file under `directory`, relative to it."""
    out = []
    for root, _, names in tf.io.gfile.walk(directory):
        rel = os.path.relpath(root, directory)
        out.extend(os.path.normpath(os.path.join(rel, n)) for n in names)
    return out


class StartedFiles:
    """What a training run adds to its model directory, so that a run that fails before its
    first step completes can take exactly that back (`remove`), and the next run is not bound
    by a config.yaml or a step-0 checkpoint that nothing was trained into.

    Made before the run creates anything. Only files that appeared since and that a training
    run writes (config.yaml, its runs/ record, checkpoints and their index, events files) are
    removed; directories only when this run made them and they are empty again.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.existed = tf.io.gfile.isdir(model_dir)
        self.runs_existed = tf.io.gfile.isdir(os.path.join(model_dir, RUNS_DIR))
        self.before = set(_files_under(model_dir)) if self.existed else set()

    def remove(self) -> List[str]:
        """Remove what this run added (see the class doc); returns the removed relative
        paths."""
        if not tf.io.gfile.isdir(self.model_dir):
            return []
        added = sorted(set(_files_under(self.model_dir)) - self.before)
        removed = [rel for rel in added if _TRAINING_OUTPUT.fullmatch(rel.replace(os.sep, "/"))]
        for rel in removed:
            tf.io.gfile.remove(os.path.join(self.model_dir, rel))
        for directory, made in ((os.path.join(self.model_dir, RUNS_DIR), not self.runs_existed),
                                (self.model_dir, not self.existed)):
            if made:
                _remove_empty_tree(directory)
        return removed


def _remove_empty_tree(directory: str) -> None:
    """Remove `directory` and its subdirectories if no file is left in them."""
    if tf.io.gfile.isdir(directory) and not _files_under(directory):
        tf.io.gfile.rmtree(directory)


def write_run_record(model_dir: str, mode: str, options: Mapping[str, Any],
                     config: Config) -> str:
    """`runs/<UTC time>-<mode>.yaml`: this run's options and config (a new file every run)."""
    directory = os.path.join(model_dir, RUNS_DIR)
    tf.io.gfile.makedirs(directory)
    now = datetime.datetime.now(datetime.timezone.utc)
    stem = f"{now:%Y%m%d-%H%M%S}-{mode}"
    path = os.path.join(directory, f"{stem}.yaml")
    n = 1
    while tf.io.gfile.exists(path):
        n += 1
        path = os.path.join(directory, f"{stem}-{n}.yaml")
    record = {"mode": mode, "started_utc": now.isoformat(timespec="seconds"),
              "tensorflow": tf.__version__, "options": dict(options),
              "config": yaml.safe_load(str(config))}
    outputs.write_file(path, yaml.safe_dump(record, default_flow_style=False, sort_keys=False))
    return path


# -------------------------------------------------------------------------------------------------
# Eval history and archive
# -------------------------------------------------------------------------------------------------
def _history_path(model_dir: str) -> str:
    return os.path.join(model_dir, HISTORY_FILE)


def read_history(model_dir: str) -> Dict[str, Any]:
    """{'format': 2, 'archive_set': key or None, 'sets': {key: {'set': ..., 'steps': {step:
    metrics}}}}; a flat file of an older version is read as the set LEGACY_SET."""
    path = _history_path(model_dir)
    if not tf.io.gfile.exists(path):
        return {"format": _FORMAT, "archive_set": None, "sets": {}}
    with tf.io.gfile.GFile(path) as f:
        data = json.load(f)
    if data.get("format") == _FORMAT:
        return data
    legacy = {k: v for k, v in data.items() if k.isdigit()}
    return {"format": _FORMAT, "archive_set": None,
            "sets": {LEGACY_SET: {"set": {"note": "evaluated before validation sets were "
                                                  "recorded"}, "steps": legacy}}}


def evaluated_steps(model_dir: str, eval_set: EvalSet) -> List[int]:
    """Checkpoint steps already evaluated on `eval_set`."""
    entry = read_history(model_dir)["sets"].get(eval_set.key, {})
    return sorted(int(s) for s in entry.get("steps", {}))


def _numbers(metrics: Mapping[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) or hasattr(v, "dtype")}


def record_eval(model_dir: str, eval_set: EvalSet, step: int, metrics: Mapping[str, Any],
                claim_archive: bool = False) -> Dict[str, Any]:
    """Add (or refresh) the entry of `step` on `eval_set`; other sets' entries stay as they are.

    With `claim_archive`, `eval_set` becomes the archive set when none is recorded yet; so does
    the first set ever evaluated. Returns the updated history.
    """
    history = read_history(model_dir)
    entry = history["sets"].setdefault(eval_set.key, {"set": eval_set.summary(), "steps": {}})
    entry["steps"][str(step)] = _numbers(metrics)
    if history.get("archive_set") is None and (claim_archive or len(history["sets"]) == 1):
        history["archive_set"] = eval_set.key
    outputs.write_file(_history_path(model_dir), json.dumps(history, indent=1, sort_keys=True))
    return history


def archive_if_best(model_dir: str, eval_set: EvalSet, ckpt_path: str,
                    metrics: Mapping[str, Any], objective: str = "AP") -> bool:
    """Copy `ckpt_path` into model_dir/archive when it is the best on the archive set so far.

    Evaluations on any other set never touch the archive. An archive written before sets were
    recorded (no 'set' in its best_eval.json) is kept as it is.
    """
    history = read_history(model_dir)
    if objective not in metrics or history.get("archive_set") != eval_set.key:
        return False
    value = float(metrics[objective])
    archive = os.path.join(model_dir, ARCHIVE_DIR)
    best_file = os.path.join(archive, BEST_FILE)
    if tf.io.gfile.exists(best_file):
        with tf.io.gfile.GFile(best_file) as f:
            best = json.load(f)
        if best.get("set") != eval_set.key:
            logging.warning("%s holds a checkpoint archived for another or an unrecorded "
                            "validation set; it is kept as it is.", archive)
            return False
        if value <= best[objective]:
            return False
    # Copy the new files first, then replace the index files, then remove the old checkpoint:
    # an interrupted copy never leaves the archive without a complete checkpoint.
    tf.io.gfile.makedirs(archive)
    old = [p for p in tf.io.gfile.glob(os.path.join(archive, "*"))
           if os.path.basename(p) not in ("checkpoint", BEST_FILE)]
    new = []
    for src in tf.io.gfile.glob(ckpt_path + ".*"):
        dst = os.path.join(archive, os.path.basename(src))
        tf.io.gfile.copy(src, dst, overwrite=True)
        new.append(dst)
    outputs.write_file(os.path.join(archive, "checkpoint"),
                  f'model_checkpoint_path: "{os.path.basename(ckpt_path)}"\n')
    outputs.write_file(best_file, json.dumps({objective: value, "set": eval_set.key,
                                         "checkpoint": os.path.basename(ckpt_path),
                                         "metrics": _numbers(metrics)}, indent=1))
    for path in old:
        if path not in new:
            tf.io.gfile.remove(path)
    logging.info("New best %s %.4f on validation set %s: archived %s in %s", objective, value,
                 eval_set.key, os.path.basename(ckpt_path), archive)
    return True


def best_on(model_dir: str, eval_set: EvalSet, objective: str = "AP"
            ) -> Optional[Dict[str, Any]]:
    """{'step', objective, ...} of the best evaluation on `eval_set`, or None."""
    steps = read_history(model_dir)["sets"].get(eval_set.key, {}).get("steps", {})
    scored = [(m[objective], int(s)) for s, m in steps.items() if objective in m]
    if not scored:
        return None
    value, step = max(scored)
    return {"step": step, objective: value}
