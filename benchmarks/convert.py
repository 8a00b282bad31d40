r"""Speed of a conversion's image work (decode, check, downscale, re-encode) against a decode-only reference.

Run:

    python benchmarks/convert.py --num_images=60 --max_image_side=512

Makes `num_images` 1024-px JPEGs (crops of scikit-learn's two bundled
photographs, flipped and shifted, and smooth random images; quality 90) and
times, on one thread, alternating them for a few rounds:

- decode: Pillow decoding every pixel (`Image.open(...).load()`), the work no
  conversion can skip;
- exact: `tfrecords_tools.images.check_image_bytes` with --max_image_side,
  decoding every pixel, then resizing and re-encoding;
- reduced: the same with `reduced_decode=True` (the default): the JPEG
  decoded at 1/2, 1/4 or 1/8 scale before the exact resize.

Prints images/s per core of each, the mean absolute pixel difference of
reduced against exact, the hours one 16-core machine and a 100-worker job
(4 cores each) would spend on Open Images' 9 M training images at these
rates (the image work only, with every core busy), and last `ratio: X.XX`:
reduced / exact images/s (the median over rounds).
"""

import io
import statistics
import time

import numpy as np
from absl import app, flags
from PIL import Image

from tfrecords_tools.images import check_image_bytes

_NUM_IMAGES = flags.DEFINE_integer("num_images", 60, "1024-px JPEGs to time.", lower_bound=1)
_MAX_SIDE = flags.DEFINE_integer("max_image_side", 512, "The conversion's --max_image_side.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of the three.", lower_bound=1)

OPEN_IMAGES_TRAIN = 9_000_000


def _images(n: int) -> list[bytes]:
    import sklearn.datasets

    rng = np.random.default_rng(0)
    bundled = sklearn.datasets.load_sample_images().images
    photos = [Image.fromarray(p).resize((1280, 854), Image.BICUBIC) for p in bundled]
    out = []
    for k in range(n):
        if k % 3 == 2:
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((1024, 768), Image.BICUBIC)
        else:
            photo = photos[k % 2]
            x, y = int(rng.integers(0, 256)), int(rng.integers(0, 171))
            image = photo.crop((x, y, x + 1024, y + 683))
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _decode(data: bytes) -> None:
    Image.open(io.BytesIO(data)).load()


def _rate(fn, images) -> float:
    start = time.process_time()
    for data in images:
        fn(data)
    return len(images) / (time.process_time() - start)


def main(argv):
    del argv
    images = _images(_NUM_IMAGES.value)
    side = _MAX_SIDE.value
    runs = {
        "decode": _decode,
        "exact": lambda d: check_image_bytes(d, side, reduced_decode=False),
        "reduced": lambda d: check_image_bytes(d, side, reduced_decode=True),
    }
    for fn in runs.values():  # warm-up
        fn(images[0])
    rates = {name: [] for name in runs}
    for _ in range(_ROUNDS.value):
        for name, fn in runs.items():
            rates[name].append(_rate(fn, images))
    median = {name: statistics.median(r) for name, r in rates.items()}
    differences = []
    for data in images:
        fast = np.asarray(Image.open(io.BytesIO(check_image_bytes(data, side))), np.float32)
        exact = np.asarray(Image.open(io.BytesIO(check_image_bytes(data, side, reduced_decode=False))), np.float32)
        differences.append(np.abs(fast - exact).mean())
    print(f"{len(images)} JPEGs of 1024 px, --max_image_side={side}, one thread (CPU time), {_ROUNDS.value} rounds")
    for name, rate in median.items():
        hours_16 = OPEN_IMAGES_TRAIN / (rate * 16) / 3600
        hours_job = OPEN_IMAGES_TRAIN / (rate * 400) / 3600
        print(
            f"{name:>8}: {rate:7.1f} images/s per core ({1000 / rate:5.2f} CPU ms each); 9 M images: "
            f"{hours_16:5.1f} h on 16 cores, {hours_job:5.2f} h on 100 workers x 4 cores"
        )
    print(f"reduced vs exact pixels: mean absolute difference {np.mean(differences):.2f} of 255 "
          f"(per image {min(differences):.2f} to {max(differences):.2f})")
    print(f"exact / decode: {median['exact'] / median['decode']:.2f}")
    ratios = [r / e for r, e in zip(rates["reduced"], rates["exact"])]
    print(f"ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    app.run(main)
