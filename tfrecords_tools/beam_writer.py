"""The dataset writer as an Apache Beam pipeline (`nlr-make-tfrecords --runner=...`).

Needs the `beam` extra (apache-beam); `writer.write_dataset(runner=...)`
imports this module only when a runner is asked for. It writes the examples
the local writer writes, through the same code: `images.read_record_image`
(via `writer.prepare_record`), `writer.check_labels` and `writer.serialize_record`.

Where the work happens:

- Rows. A `manifest` file is read and parsed on the workers: the launcher
  cuts it into byte ranges, the workers count the lines starting in each
  range (so every row keeps its `file:line` origin), then read and parse
  them with the local converter's `manifest.RowParser`, one row per line
  (a quoted line break in a CSV field is an error naming the row). The
  other sources join several files (openimages, coco, clothing1m) or make
  their pixels in the launching process (tfds, digits_mosaic, glyphs): there
  the launcher runs the converter and stages its items (paths and labels;
  the generated pixels for those) as files the workers read.
- Images are read, checked, decoded and resized on the workers.
- Shards. A record goes to bucket `shard_of(split, id)`: a SHA-256 hash of
  split and id, so a dataset is the same whoever runs it and however the
  work is split. One worker assembles a bucket: it finds duplicate ids
  there (an id always lands in the same bucket), sorts the records by id
  and writes them, so a shard must fit in a worker's memory (pick
  `--num_shards` for shards of a few hundred MB). Empty buckets are left
  out and the others named `SPLIT-0000j-of-0000n.tfrecord`, as locally.
- Every item carries its position in the source (a manifest's line
  number, the launcher's count), so that of two records with one id the
  first is kept, and bad rows are listed, the first
  `writer.MAX_LISTED_BAD_ROWS`, in the order the local writer lists them.
  They are counted with Beam metrics too (namespace `nlr_tf`). Without
  `skip_bad` the pipeline still runs to its end; the launcher then fails
  naming the first bad row.
- Label statistics are merged across workers by a `CombineFn`.
- Everything is written into `atomic_output_dir`'s temporary folder, and
  dataset.json last, by the launcher, once the pipeline has finished: a
  failed pipeline leaves no dataset.
"""

import contextlib
import hashlib
import io
import os
import pickle
import shlex
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.metrics import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from nlr_tf.data import files, schema
from nlr_tf.data.label_stats import LabelStats
from nlr_tf.data.output_dir import atomic_output_dir
from nlr_tf.data.progress import progress_bar
from tfrecords_tools import writer
from tfrecords_tools.manifest import ManifestRows
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Item

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")

# Bytes of a manifest per range read by one worker.
RANGE_BYTES = 16 << 20
# Items per file staged by the launcher for the sources it converts itself.
STAGED_ITEMS_PER_FILE = 1000
# The pipeline's own files, inside the temporary folder; removed before the folder becomes the dataset.
_WORK_DIR = ".beam"
_SUMMARY = "summary.json"
_BAD, _FATAL, _LABELS = "bad", "fatal", "labels"

_BAD_ROWS = Metrics.counter("nlr_tf", "bad_rows")
_DUPLICATE_IDS = Metrics.counter("nlr_tf", "duplicate_ids")
_RECORDS_WRITTEN = Metrics.counter("nlr_tf", "records_written")


def shard_of(split: str, image_id: str, num_shards: int) -> int:
    """The bucket (0 .. num_shards - 1) of an image: a SHA-256 hash of its split and id, the same in every process."""
    digest = hashlib.sha256(f"{split}/{image_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def split_options(beam_options: Union[str, Sequence[str]]) -> list[str]:
    """Beam options as a list: a string is split as a shell would split it.

    Raises:
        ConversionError: unbalanced quotes.
    """
    if not isinstance(beam_options, str):
        return list(beam_options)
    try:
        return shlex.split(beam_options)
    except ValueError as e:
        raise ConversionError(f"--beam_options cannot be split into options: {e} in {beam_options!r}") from None


def pipeline_options(runner: str, beam_options: Union[str, Sequence[str]]) -> PipelineOptions:
    """Beam's `PipelineOptions` for `runner`, checked.

    Args:
        runner: str. One of `RUNNERS`.
        beam_options: str (split as a shell would) or list of str. Beam's
            own options, e.g. "--direct_num_workers=2".

    Raises:
        ConversionError: an unknown runner, or options that are malformed,
            unknown to Beam, hold a bad value or name the runner.
    """
    if runner not in RUNNERS:
        raise ConversionError(f"--runner={runner} is not one of {', '.join(RUNNERS)}")
    tokens = split_options(beam_options)
    if any(t == "--runner" or t.startswith("--runner=") for t in tokens):
        raise ConversionError("--beam_options must not hold --runner: pass the runner as --runner")
    stray = [t for i, t in enumerate(tokens) if not t.startswith("-") and (i == 0 or "=" in tokens[i - 1])]
    if stray:
        raise ConversionError(f"--beam_options: {stray[0]!r} is not an option (options start with --)")
    options = PipelineOptions([*tokens, f"--runner={runner}"])
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            known = options.get_all_options()
            unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    except SystemExit:  # argparse refused a value
        lines = [line for line in stderr.getvalue().splitlines() if "error:" in line]
        reason = lines[-1].split("error:", 1)[1].strip() if lines else "a bad value"
        raise ConversionError(f"--beam_options: {reason}") from None
    if unknown:
        raise ConversionError(f"--beam_options: Beam has no option {', '.join('--' + u for u in unknown)}")
    return options


# === Reading rows ===
def _line_ranges(path: str) -> list[tuple[int, int, int]]:
    """(index, start, end) byte ranges of `RANGE_BYTES` covering the file."""
    size = tf.io.gfile.stat(path).length
    return [(i, start, min(start + RANGE_BYTES, size)) for i, start in enumerate(range(0, size, RANGE_BYTES))]


def _count_lines(byte_range: tuple[int, int, int], path: str) -> tuple[int, int]:
    """(index, number of lines starting in the range): position 0, and each position after a newline."""
    index, start, end = byte_range
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(max(start - 1, 0))
        data = f.read(end - max(start - 1, 0) - 1)
    return index, data.count(b"\n") + (1 if start == 0 else 0)


def _first_line_numbers(counts: list[tuple[int, int]]) -> dict[int, int]:
    first, line = {}, 1
    for index, n in sorted(counts):
        first[index] = line
        line += n
    return first


def _read_lines(
    byte_range: tuple[int, int, int], path: str, first_lines: dict[int, int], skip_lines: int
) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes) of every line starting in the range, after the first `skip_lines`.

    Line endings are kept exactly as written (GFile's `readline` would turn a CRLF into LF).
    """
    index, start, end = byte_range
    lineno = first_lines[index]
    begin = max(start - 1, 0)  # the byte before the range tells whether a line starts at its first byte
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(begin)
        data = f.read(end - begin)
        if start == 0:
            pos = 0
        elif b"\n" in data:
            pos = data.index(b"\n") + 1
        else:
            return  # inside a line that started in an earlier range
        while begin + pos < end:
            newline = data.find(b"\n", pos)
            while newline < 0:  # the last line runs past the range
                more = f.read(1 << 20)
                if not more:
                    break
                data += more
                newline = data.find(b"\n", pos)
            stop = newline + 1 if newline >= 0 else len(data)
            if lineno > skip_lines:
                yield lineno, begin + pos, data[pos:stop]
            lineno += 1
            pos = stop


def _parse_line(line: tuple[int, int, bytes], rows: ManifestRows) -> Iterator[Any]:
    """(position, item) of a manifest line, its line number the position in the source; or a fatal error."""
    lineno, offset, raw = line
    try:
        item = rows.parse_line(lineno, offset, raw)
    except ConversionError as e:
        yield beam.pvalue.TaggedOutput(_FATAL, (lineno, str(e)))
        return
    if item is not None:
        yield lineno, item


def _stage_items(conversion: Conversion, directory: str, progress: bool) -> list[str]:
    """Writes the conversion's items with their positions, pickled, in TFRecord files; returns their paths."""
    paths: list[str] = []
    out: Optional[tf.io.TFRecordWriter] = None
    bar = progress_bar(conversion.total, "staging", progress)
    try:
        for n, item in enumerate(conversion.items):
            if n % STAGED_ITEMS_PER_FILE == 0:
                if out is not None:
                    out.close()
                paths.append(os.path.join(directory, f"items-{len(paths):05d}.tfrecord"))
                out = tf.io.TFRecordWriter(paths[-1])
            out.write(pickle.dumps((n, item), protocol=pickle.HIGHEST_PROTOCOL))
            bar.update()
    finally:
        if out is not None:
            out.close()
        bar.close()
    return paths


def _read_staged(path: str) -> Iterator[tuple[int, Item]]:
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        yield pickle.loads(raw)


# === Images, labels, shards ===
def _bad(bad: BadRow, position: int) -> beam.pvalue.TaggedOutput:
    _BAD_ROWS.inc()
    return beam.pvalue.TaggedOutput(_BAD, ((bad.origin, bad.reason), position))


def _prepare(
    positioned: tuple[int, Item], num_classes: int, num_shards: int, resize: tuple[int, bool]
) -> Iterator[Any]:
    """Reads and checks an item's image and labels (in a worker); yields ((split, bucket), entry) or a bad row."""
    position, item = positioned
    result = item if isinstance(item, BadRow) else writer.prepare_record(item, *resize)
    if isinstance(result, BadRow):
        yield _bad(result, position)
        return
    record, encoded = result
    problem = writer.check_labels(record, num_classes)
    if problem is not None:
        yield _bad(BadRow(record.origin or record.id, problem), position)
        return
    labels = [record.noisy, record.verified_pos, record.verified_neg, record.true]
    labels = tuple(None if v is None else [int(c) for c in v] for v in labels)
    entry = (record.id, position, record.origin or record.id, writer.serialize_record(record, encoded), labels)
    yield (record.split, shard_of(record.split, record.id, num_shards)), entry


def _write_shard(keyed: tuple[tuple[str, int], Any], directory: str) -> Iterator[Any]:
    """Writes a bucket's records sorted by id, of each id the first in the source; the later ones are bad rows."""
    (split, bucket), entries = keyed
    kept = []
    for entry in sorted(entries, key=lambda e: e[:2]):
        image_id, position, origin = entry[:3]
        if kept and kept[-1][0] == image_id:
            _DUPLICATE_IDS.inc()
            yield _bad(BadRow(origin, f"duplicate image id {image_id!r} in split {split!r}"), position)
        else:
            kept.append(entry)
    name = os.path.join(directory, f"{split}.part-{bucket:05d}")
    # A retried bundle writes its own attempt, then replaces the file: the same records, sorted, every time.
    attempt = os.path.join(directory, _WORK_DIR, f"{split}.part-{bucket:05d}.{uuid.uuid4().hex}")
    with tf.io.TFRecordWriter(attempt) as out:
        for entry in kept:
            out.write(entry[3])
    tf.io.gfile.rename(attempt, name, overwrite=True)
    _RECORDS_WRITTEN.inc(len(kept))
    for entry in kept:
        yield beam.pvalue.TaggedOutput(_LABELS, (split, entry[4]))
    yield {"split": split, "bucket": bucket, "records": len(kept)}


class LabelStatsFn(beam.CombineFn):
    """Combines label lists `(noisy, verified_pos, verified_neg, true)` into a `LabelStats` summary."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def create_accumulator(self) -> LabelStats:
        return LabelStats(self.num_classes)

    def add_input(self, stats: LabelStats, labels: tuple) -> LabelStats:
        stats.add(*labels)
        return stats

    def merge_accumulators(self, accumulators) -> LabelStats:
        accumulators = iter(accumulators)
        stats = next(accumulators)
        for other in accumulators:
            stats.merge(other)
        return stats

    def extract_output(self, stats: LabelStats) -> dict[str, Any]:
        return stats.summary()


def _write_summary(entries: list[dict[str, Any]], path: str) -> None:
    files.write_json(path, entries, indent=None)


def _listing_order(bad: tuple[tuple[str, str], int]) -> tuple:
    (origin, reason), position = bad
    return position, origin, reason


def _build(
    p: beam.Pipeline,
    conversion: Conversion,
    directory: str,
    num_shards: int,
    resize: tuple[int, bool],
    staged: list[str],
) -> None:
    """The pipeline: items -> prepared examples -> shards, with bad rows, statistics and a summary file beside."""
    fatal = []
    if isinstance(conversion.items, ManifestRows):
        rows = conversion.items
        ranges = p | "LineRanges" >> beam.Create(_line_ranges(rows.path))
        first_lines = (
            ranges
            | "CountLines" >> beam.Map(_count_lines, rows.path)
            | "AllCounts" >> beam.combiners.ToList()
            | "FirstLines" >> beam.Map(_first_line_numbers)
        )
        parsed = (
            ranges
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadLines" >> beam.FlatMap(_read_lines, rows.path, beam.pvalue.AsSingleton(first_lines), rows.skip_lines)
            | "ParseRows" >> beam.FlatMap(_parse_line, rows).with_outputs(_FATAL, main="items")
        )
        items, fatal = parsed.items, [parsed[_FATAL]]
    else:
        items = (
            p
            | "StagedFiles" >> beam.Create(staged)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadStaged" >> beam.FlatMap(_read_staged)
        )
    prepared = (
        items
        | "SpreadItems" >> beam.Reshuffle()
        | "Prepare" >> beam.FlatMap(_prepare, len(conversion.classes), num_shards, resize).with_outputs(_BAD, main="ok")
    )
    written = (
        prepared.ok
        | "GroupBuckets" >> beam.GroupByKey()
        | "WriteShards" >> beam.FlatMap(_write_shard, directory).with_outputs(_BAD, _LABELS, main="shards")
    )
    stats = (
        written[_LABELS]
        | "LabelStats" >> beam.CombinePerKey(LabelStatsFn(len(conversion.classes)))
        | "StatsEntries" >> beam.MapTuple(lambda split, summary: {"stats": split, "summary": summary})
    )
    # A row met twice (a COCO image in two splits) is one bad row, listed where it was first met.
    bad = (prepared[_BAD], written[_BAD]) | "AllBad" >> beam.Flatten() | "FirstMet" >> beam.CombinePerKey(min)
    bad_count = (
        bad | "CountBad" >> beam.combiners.Count.Globally() | "CountEntry" >> beam.Map(lambda n: {"bad_count": n})
    )
    bad_rows = (
        bad
        | "FirstBad" >> beam.combiners.Top.Of(writer.MAX_LISTED_BAD_ROWS, key=_listing_order, reverse=True)
        | "BadEntry" >> beam.Map(lambda rows: {"bad_rows": [row for row, _ in sorted(rows, key=_listing_order)]})
    )
    entries = [written.shards, stats, bad_count, bad_rows]
    if fatal:
        entries.append(
            fatal[0]
            | "FirstFatal" >> beam.combiners.Top.Of(1, key=lambda e: e[0], reverse=True)
            | "FatalEntry" >> beam.Map(lambda errors: {"fatal": [message for _, message in errors]})
        )
    _ = (
        entries
        | "AllEntries" >> beam.Flatten()
        | "Gather" >> beam.combiners.ToList()
        | "WriteSummary" >> beam.Map(_write_summary, os.path.join(directory, _WORK_DIR, _SUMMARY))
    )


# === The launcher ===
def write_dataset_beam(
    conversion: Conversion,
    output_dir: str,
    *,
    runner: str,
    beam_options: Union[str, Sequence[str]] = (),
    num_shards: int = 8,
    skip_bad: bool = False,
    overwrite: bool = False,
    max_image_side: int = 0,
    reduced_decode: bool = True,
    arguments: Optional[dict[str, Any]] = None,
    progress: bool = True,
) -> schema.DatasetInfo:
    """Writes `conversion` as a dataset folder at `output_dir` with an Apache Beam pipeline.

    The arguments mean what they mean for `writer.write_dataset`. The
    output folder (and a manifest and its images) must be where the
    workers can read and write them (`gs://...` for Dataflow).

    Args:
        runner: str. One of `RUNNERS`.
        beam_options: str or list of str. Beam's pipeline options.
        progress: bool. A progress bar while the launcher stages the items
            of a source it converts itself.

    Returns:
        The written `DatasetInfo`.

    Raises:
        BadInputError: a bad row without `skip_bad`; names the first.
        ConversionError: bad options or inputs, or nothing was written.
        OutputDirError: the output folder exists.
    """
    tokens = split_options(beam_options)
    options = pipeline_options(runner, tokens)
    if num_shards < 1:
        raise ConversionError(f"num_shards must be >= 1, got {num_shards}")
    if not conversion.classes:
        raise ConversionError("the conversion has no classes")
    if isinstance(conversion.items, ManifestRows):
        conversion.items.check()  # a CSV's header, read here once
    with atomic_output_dir(output_dir, overwrite) as tmp_dir:
        work = os.path.join(tmp_dir, _WORK_DIR)
        files.makedirs(work)
        staged = [] if isinstance(conversion.items, ManifestRows) else _stage_items(conversion, work, progress)
        p = beam.Pipeline(options=options)
        _build(p, conversion, tmp_dir, num_shards, (max_image_side, reduced_decode), staged)
        result = p.run()
        state = result.wait_until_finish()  # even with --no_wait_until_finish: the launcher reads what it wrote
        if state != PipelineState.DONE:
            raise ConversionError(f"the Beam pipeline ended in state {state}, not DONE")
        _log_metrics(result)
        info = _finish(files.read_json(os.path.join(work, _SUMMARY)), conversion, tmp_dir, skip_bad)
        files.remove_tree(work)
        info.provenance.update(writer.provenance(conversion, arguments))
        info.provenance["beam"] = {
            "runner": runner,
            "options": writer.redact_options(tokens),
            "apache_beam": beam.__version__,
        }
        info.write(tmp_dir)  # last: the folder is a dataset once dataset.json is in it
    info.path = files.absolute(output_dir)
    return info


def _log_metrics(result: Any) -> None:
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace("nlr_tf"))["counters"]
    except (AttributeError, NotImplementedError, KeyError):  # a runner without metrics
        return
    totals: dict[str, int] = {}
    for counter in counters:  # one per step that counts
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.result
    logging.info("Beam metrics: %s", ", ".join(f"{name}={n}" for name, n in sorted(totals.items())))


def _finish(
    summary: list[dict[str, Any]], conversion: Conversion, directory: str, skip_bad: bool
) -> schema.DatasetInfo:
    """Checks the pipeline's summary, names the shards, and returns the dataset's `DatasetInfo` (not yet written)."""
    merged: dict[str, Any] = {"fatal": [], "bad_count": 0, "bad_rows": []}
    buckets: dict[str, dict[int, int]] = {}
    noise = {}
    for entry in summary:
        if "bucket" in entry:
            buckets.setdefault(entry["split"], {})[entry["bucket"]] = entry["records"]
        elif "stats" in entry:
            noise[entry["stats"]] = entry["summary"]
        else:
            merged.update(entry)
    if merged["fatal"]:
        raise ConversionError(merged["fatal"][0])
    bad_rows = merged["bad_rows"]
    count = merged["bad_count"]
    if count and not skip_bad:
        more = f" (and {count - 1} more bad rows; --skip_bad skips them)" if count > 1 else ""
        raise writer.BadInputError(f"{bad_rows[0][0]}: {bad_rows[0][1]}{more}")
    if not buckets:
        raise ConversionError(
            f"no record was written ({count} bad rows skipped)" if count else "the source holds no record"
        )
    splits = {}
    for split, sizes in sorted(buckets.items()):
        files = []
        for j, bucket in enumerate(sorted(sizes)):
            files.append(schema.shard_name(split, j, len(sizes)))
            tf.io.gfile.rename(
                os.path.join(directory, f"{split}.part-{bucket:05d}"), os.path.join(directory, files[-1])
            )
        splits[split] = schema.SplitInfo(num_records=sum(sizes.values()), num_shards=len(files), files=files)
    logging.info("Beam pipeline wrote %s; %d bad rows", {s: i.num_records for s, i in splits.items()}, count)
    return schema.DatasetInfo(
        num_classes=len(conversion.classes),
        multi_label=conversion.multi_label,
        splits=splits,
        classes=list(conversion.classes),
        provenance={"noise_statistics": {split: noise[split] for split in sorted(splits)}},
        skipped=writer.skipped_summary(count, [{"origin": o, "reason": r} for o, r in bad_rows]),
    )
