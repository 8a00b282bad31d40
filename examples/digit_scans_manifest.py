r"""A noisily labelled image folder and its manifest, made offline, to try nlr-compare without data of your own.

Example:
  python examples/digit_scans_manifest.py --output_dir=/tmp/scans
  nlr-make-tfrecords --source=manifest --input=/tmp/scans/rows.csv --classes=/tmp/scans/classes.txt \
      --image_root=/tmp/scans --output_dir=/tmp/scans/data
  nlr-compare --dataset=/tmp/scans/data --output_dir=/tmp/scans/compare --dry_run

Each image (64x64 PNG) holds one to three of scikit-learn's bundled
handwritten digit scans (1,797 8x8 scans, upscaled) on a 2x2 grid; its
classes are the digits it shows. Train, val and test images are cut from
disjoint scans. The labels are what a dataset assembled from an automatic
annotator looks like, as in Open Images:

- noisy labels on every training image: each digit present missed with
  probability 0.3, its look-alike (1-7, 3-8, 4-9, 5-6, 2-7, 0-6) added
  falsely with probability 0.25, any other digit with probability 0.02;
- a clean split verified partially, as human raters verify a sample of the
  annotator's labels: each class of each image verified with probability
  0.7 (present or absent), the rest left unverified;
- val and test verified in every class;
- one rare class: the digit 0 kept in a tenth of the images it would be in.

Writes OUTPUT_DIR/img/*.png, OUTPUT_DIR/rows.csv (image, noisy,
verified_pos, verified_neg, split, id) and OUTPUT_DIR/classes.txt.
"""

import csv
import os

import numpy as np
import sklearn.datasets
from absl import app, flags
from PIL import Image

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the images and the manifest are written.")
_SIZES = flags.DEFINE_list("sizes", ["4000", "600", "500", "500"], "Images in the noisy, clean, val and test splits.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the images and of their labels.")

CLASSES = [str(d) for d in range(10)]
LOOK_ALIKE = {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5, 2: 7, 0: 6}
MISS, CONFUSE, FALSE, VERIFY = 0.3, 0.25, 0.02, 0.7
RARE, RARE_KEEP = 0, 0.1
SCALE = 4  # 8x8 scans at 32x32: a 2x2 grid of them is 64x64


def _pools(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Disjoint scans for the training images (noisy and clean), val and test: 60, 20, 20 %."""
    order = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": order[:a], "val": order[a:b], "test": order[b:]}


def _image(rng, scans, targets, pool) -> tuple[np.ndarray, set[int]]:
    """One image of one to three scans from `pool` on a 2x2 grid, and the digits it shows."""
    while True:
        cells = rng.choice(4, size=int(rng.integers(1, 4)), replace=False)
        picks = rng.choice(pool, size=len(cells), replace=False)
        digits = {int(targets[i]) for i in picks}
        if RARE not in digits or rng.random() < RARE_KEEP:
            break
    canvas = np.zeros((64, 64), np.float32)
    for cell, i in zip(cells, picks):
        y, x = divmod(int(cell), 2)
        canvas[32 * y : 32 * y + 32, 32 * x : 32 * x + 32] = np.kron(scans[i], np.ones((SCALE, SCALE)))
    return (canvas * (255 / 16)).clip(0, 255).astype(np.uint8), digits


def _noisy(rng, digits: set[int]) -> set[int]:
    labels = {d for d in digits if rng.random() >= MISS}
    labels |= {LOOK_ALIKE[d] for d in digits if rng.random() < CONFUSE}
    labels |= {d for d in range(10) if d not in digits and rng.random() < FALSE}
    return labels


def main(argv):
    del argv
    sizes = dict(zip(("noisy", "clean", "val", "test"), (int(s) for s in _SIZES.value)))
    digits_data = sklearn.datasets.load_digits()
    rng = np.random.default_rng(_SEED.value)
    pools = _pools(rng, len(digits_data.target))
    root = _OUTPUT_DIR.value
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    rows = []
    for split, count in sizes.items():
        pool = pools["train" if split in ("noisy", "clean") else split]
        for k in range(count):
            pixels, digits = _image(rng, digits_data.images, digits_data.target, pool)
            name = f"img/{split}_{k:05d}.png"
            Image.fromarray(np.stack([pixels] * 3, -1)).save(os.path.join(root, name))
            verified = set(range(10)) if split in ("val", "test") else set()
            if split == "clean":
                verified = {d for d in range(10) if rng.random() < VERIFY}
            rows.append(
                {
                    "image": name,
                    # val and test keep the annotator's labels too (unused for training): as a real dataset would.
                    "noisy": ";".join(CLASSES[d] for d in sorted(_noisy(rng, digits))),
                    "verified_pos": ";".join(CLASSES[d] for d in sorted(verified & digits)),
                    "verified_neg": ";".join(CLASSES[d] for d in sorted(verified - digits)),
                    "split": split,
                    "id": f"{split}_{k:05d}",
                }
            )
    with open(os.path.join(root, "rows.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    print(f"wrote {len(rows):,} images and {os.path.join(root, 'rows.csv')}")


if __name__ == "__main__":
    flags.mark_flag_as_required("output_dir")
    app.run(main)
