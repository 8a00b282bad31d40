"""Sharded, parallel, atomic writing of a dataset folder.

The converter's items stream through a pool of worker threads that read and
fully decode each image (Pillow releases the GIL while decoding); results
come back in order, so the output is deterministic. Records go round-robin
into `--num_shards` shards per split. Everything is written to a temporary
sibling folder that is renamed to the output folder only once complete, so a
failed or interrupted run never leaves a dataset that looks complete.

With a Beam `runner` the same conversion runs as an Apache Beam pipeline
(`tfrecords_tools.beam_writer`): the same checks and examples, shards
assigned by a hash of each image id.
"""

import collections
import concurrent.futures
import datetime
import os
import re
from collections.abc import Sequence
from typing import Any, Optional, Union

import tensorflow as tf

from nlr_tf.data import files, schema
from nlr_tf.data.label_stats import LabelStats
from nlr_tf.data.output_dir import atomic_output_dir
from nlr_tf.data.parsing import make_example
from nlr_tf.data.progress import progress_bar
from tfrecords_tools import CONVERTER_VERSION
from tfrecords_tools.images import ImageError, read_record_image
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Record

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")

# Skipped rows listed in dataset.json; the count is always exact, and `not_listed` says how many more there were (a
# big source with a systematic fault would otherwise put a gigabyte of rows in dataset.json).
MAX_LISTED_BAD_ROWS = 1000
_SECRET = re.compile(r"secret|token|password|key", re.I)


class BadInputError(ValueError):
    """A bad input row met without `--skip_bad`."""


def prepare_record(record: Record, max_side: int, reduced_decode: bool) -> Union[tuple[Record, bytes], BadRow]:
    """The record with its image read, decoded, resized and encoded (`read_record_image`), or the bad row saying why
    it could not be (the local writer's threads and the Beam pipeline's workers call it alike)."""
    try:
        return record, read_record_image(record, max_side, reduced_decode)
    except ImageError as e:
        return BadRow(record.origin or record.id, str(e))


def skipped_summary(count: int, listed: list[dict[str, str]]) -> dict[str, Any]:
    """The `skipped` entry of dataset.json: `count` bad rows, of which `listed` (at most `MAX_LISTED_BAD_ROWS`)."""
    return {"count": count, "rows": listed, "not_listed": count - len(listed)}


def redact_options(options: Sequence[str]) -> list[str]:
    """Command-line options as recorded in dataset.json: the values of secret-looking ones (keys, tokens) hidden."""
    out, hide_next = [], False
    for token in options:
        name, eq, _ = token.partition("=")
        secret = name.startswith("-") and bool(_SECRET.search(name))
        if hide_next and not token.startswith("-"):
            out.append("<redacted>")
        else:
            out.append(f"{name}=<redacted>" if secret and eq else token)
        hide_next = secret and not eq
    return out


def serialize_record(record: Record, encoded: bytes) -> bytes:
    """The record's serialized example (the same bytes in every process: `make_example`)."""
    return make_example(record.id, encoded, record.noisy, record.verified_pos, record.verified_neg, record.true)


def check_labels(record: Record, num_classes: int) -> Optional[str]:
    """What is wrong with the record's id, split or labels for a dataset of `num_classes` classes (None: nothing)."""
    if not record.id:
        return "empty image id"
    if not _SPLIT_RE.match(record.split or ""):
        return f"bad split name {record.split!r} (letters, digits and _ only)"
    lists = {"noisy": record.noisy, "verified_pos": record.verified_pos, "verified_neg": record.verified_neg}
    if record.true is not None:
        lists["true"] = record.true
    for name, values in lists.items():
        for v in values:
            if not 0 <= int(v) < num_classes:
                return f"{name} class index {v} is out of range for {num_classes} classes"
    both = set(record.verified_pos) & set(record.verified_neg)
    if both:
        return f"classes {sorted(both)} are verified both present and absent"
    return None


class _SplitWriter:
    """Round-robin shard writers of one split, under temporary names."""

    def __init__(self, directory: str, split: str, num_shards: int, num_classes: int):
        self.directory, self.split, self.num_shards = directory, split, num_shards
        self.writers: dict[int, tf.io.TFRecordWriter] = {}
        self.counts = collections.Counter()
        self.num_records = 0
        self.ids: set[str] = set()
        self.stats = LabelStats(num_classes)

    def _tmp_name(self, shard: int) -> str:
        return os.path.join(self.directory, f"{self.split}.part-{shard:05d}")

    def write(self, serialized: bytes) -> None:
        shard = self.num_records % self.num_shards
        if shard not in self.writers:
            self.writers[shard] = tf.io.TFRecordWriter(self._tmp_name(shard))
        self.writers[shard].write(serialized)
        self.counts[shard] += 1
        self.num_records += 1

    def finish(self) -> schema.SplitInfo:
        for w in self.writers.values():
            w.close()
        used = sorted(self.writers)
        files = []
        for j, shard in enumerate(used):
            name = schema.shard_name(self.split, j, len(used))
            tf.io.gfile.rename(self._tmp_name(shard), os.path.join(self.directory, name))
            files.append(name)
        return schema.SplitInfo(num_records=self.num_records, num_shards=len(files), files=files)


def write_dataset(
    conversion: Conversion,
    output_dir: str,
    num_shards: int = 8,
    skip_bad: bool = False,
    num_workers: Optional[int] = None,
    overwrite: bool = False,
    max_image_side: int = 0,
    arguments: Optional[dict[str, Any]] = None,
    progress: bool = True,
    reduced_decode: bool = True,
    runner: Optional[str] = None,
    beam_options: Sequence[str] = (),
) -> schema.DatasetInfo:
    """Writes `conversion` as a dataset folder at `output_dir`.

    Args:
        conversion: `Conversion`. Classes and the stream of items.
        output_dir: str. Folder to create; must not exist unless `overwrite`.
        num_shards: int. Shards per split (fewer when a split has fewer
            records). Defaults to 8.
        skip_bad: bool. Skip and count bad rows instead of failing on the
            first one. Defaults to False.
        num_workers: int. Image reading threads. Defaults to the CPU count.
        overwrite: bool. Replace an existing dataset at `output_dir` (only
            once the new one is complete). Defaults to False.
        max_image_side: int. Downscale larger images to this longer side;
            0 keeps them. Defaults to 0.
        arguments: dict. Recorded in the provenance.
        progress: bool. Show a progress bar on stderr. Defaults to True.
        reduced_decode: bool. With `max_image_side`, decode JPEGs at a reduced
            scale before the exact resize (`images.check_image_bytes`).
            Defaults to True.
        runner: str or None. An Apache Beam runner (`DirectRunner`,
            `DataflowRunner`, `FlinkRunner`, `SparkRunner`): convert as a
            Beam pipeline (`beam_writer.write_dataset_beam`; needs the
            `beam` extra); `num_workers` and `progress` are then unused.
            Defaults to None: threads on this machine.
        beam_options: list of str. Beam pipeline options for `runner`,
            e.g. ["--direct_num_workers=2"].

    Returns:
        The written `DatasetInfo`.

    Raises:
        BadInputError: a bad row without `skip_bad`; names the row.
        ConversionError: the output folder exists, or nothing was written.
    """
    if num_shards < 1:
        raise ConversionError(f"num_shards must be >= 1, got {num_shards}")
    if not conversion.classes:
        raise ConversionError("the conversion has no classes")
    if runner:
        try:
            from tfrecords_tools import beam_writer
        except ImportError as e:
            raise ConversionError(
                f"--runner={runner} needs Apache Beam, which cannot be imported ({e}): "
                "pip install 'nlr_tf[beam]' (apache-beam>=2.77)"
            ) from None
        return beam_writer.write_dataset_beam(
            conversion,
            output_dir,
            runner=runner,
            beam_options=beam_options,
            num_shards=num_shards,
            skip_bad=skip_bad,
            overwrite=overwrite,
            max_image_side=max_image_side,
            reduced_decode=reduced_decode,
            arguments=arguments,
            progress=progress,
        )
    with atomic_output_dir(output_dir, overwrite) as tmp_dir:
        workers = num_workers or os.cpu_count() or 1
        info = _write_into(
            conversion, tmp_dir, num_shards, skip_bad, workers, (max_image_side, reduced_decode), progress
        )
        info.provenance.update(provenance(conversion, arguments))
        info.write(tmp_dir)
    info.path = files.absolute(output_dir)
    return info


def provenance(conversion: Conversion, arguments: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The provenance entries of dataset.json besides the noise statistics."""
    return {
        "source": conversion.source,
        "converter_version": CONVERTER_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "arguments": arguments or {},
        "details": conversion.details,
    }


def _write_into(
    conversion: Conversion,
    directory: str,
    num_shards: int,
    skip_bad: bool,
    num_workers: int,
    resize: tuple[int, bool],
    progress: bool,
) -> schema.DatasetInfo:
    num_classes = len(conversion.classes)
    splits: dict[str, _SplitWriter] = {}
    skipped: list[dict[str, str]] = []  # the first MAX_LISTED_BAD_ROWS
    seen_bad: set[tuple[str, str]] = set()

    def reject(bad: BadRow) -> None:
        if not skip_bad:
            raise BadInputError(bad.message())
        # A source row written to two splits (a COCO image in `noisy` and `clean`) is one bad row.
        if (bad.origin, bad.reason) not in seen_bad:
            seen_bad.add((bad.origin, bad.reason))
            if len(skipped) < MAX_LISTED_BAD_ROWS:
                skipped.append({"origin": bad.origin, "reason": bad.reason})

    def handle(result: Union[tuple[Record, bytes], BadRow]) -> None:
        if isinstance(result, BadRow):
            return reject(result)
        record, encoded = result
        problem = check_labels(record, num_classes)
        writer = splits.get(record.split)
        if problem is None:
            if writer is None:
                writer = splits[record.split] = _SplitWriter(directory, record.split, num_shards, num_classes)
            if record.id in writer.ids:
                problem = f"duplicate image id {record.id!r} in split {record.split!r}"
        if problem is not None:
            return reject(BadRow(record.origin or record.id, problem))
        writer.ids.add(record.id)
        writer.stats.add(record.noisy, record.verified_pos, record.verified_neg, record.true)
        writer.write(serialize_record(record, encoded))

    window = 16 * num_workers
    bar = progress_bar(conversion.total, "writing", progress)
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in conversion.items:
                if isinstance(item, BadRow):
                    done: concurrent.futures.Future = concurrent.futures.Future()
                    done.set_result(item)
                    pending.append(done)
                else:
                    pending.append(pool.submit(prepare_record, item, *resize))
                while len(pending) >= window:
                    handle(pending.popleft().result())
                    bar.update()
            while pending:
                handle(pending.popleft().result())
                bar.update()
        finally:
            for f in pending:
                f.cancel()
            bar.close()
    split_infos = {name: w.finish() for name, w in splits.items()}
    if not split_infos:
        raise ConversionError(
            f"no record was written ({len(seen_bad)} bad rows skipped)" if seen_bad else "the source holds no record"
        )
    return schema.DatasetInfo(
        num_classes=num_classes,
        multi_label=conversion.multi_label,
        splits=split_infos,
        classes=list(conversion.classes),
        provenance={"noise_statistics": {name: w.stats.summary() for name, w in sorted(splits.items())}},
        skipped=skipped_summary(len(seen_bad), skipped),
    )
