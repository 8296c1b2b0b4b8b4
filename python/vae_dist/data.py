"""MNIST-style data as vae-dist sees it: IDX files, the fixed held-out binarisation and the
held-out evaluation noise.

``heldout`` reproduces vae-dist's ``Batcher.heldOut`` bit for bit: the same pixels, as float32,
that ``vae-dist eval`` scores, so a held-out ELBO computed in Python is comparable with vae-dist's.
``eval_noise`` reproduces the noise eps that ``vae-dist eval`` (and a run's held-out evaluation)
draws for each test image, so the same estimator can be computed outside vae-dist.
"""

import gzip

import numpy as np

#: The seed that binarises every held-out set (vae-dist's ``heldOutBinarizationSeed``).
HELDOUT_SEED = 20140101
#: The stream purpose of the held-out binarisation (``CounterRNG.Purpose.testBinarize``).
PURPOSE_TEST_BINARIZE = 7
#: The stream purpose of the held-out evaluation noise (``CounterRNG.Purpose.evalNoise``).
PURPOSE_EVAL_NOISE = 6

# SplitMix64 increment (the golden ratio) and finaliser multipliers, and the key multipliers of
# vae-dist's CounterRNG.stream (purpose, epoch, index).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_KEY_PURPOSE = np.uint64(0xD1B54A32D192ED03)
_KEY_EPOCH = np.uint64(0x8CB92BA72F3D8DD7)
_KEY_INDEX = np.uint64(0xABC98388FB8E0F5B)

_BINARIZATIONS = ("none", "static", "dynamic")
_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _mix(x):
    """SplitMix64's output function of ``x + golden`` (uint64 arrays, wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def stream_states(seed, purpose, epoch, indices):
    """Initial states of vae-dist's counter-RNG streams ``(seed, purpose, epoch, index)`` for an
    array of indices (``CounterRNG.stream``)."""
    with np.errstate(over="ignore"):
        idx = np.asarray(indices, dtype=np.uint64)
        h = _mix(np.full(idx.shape, seed, dtype=np.uint64) + _GOLDEN)  # mix(seed + golden): golden added twice
        h = _mix(h ^ (np.uint64(purpose) * _KEY_PURPOSE))
        h = _mix(h ^ (np.uint64(epoch) * _KEY_EPOCH))
        return _mix(h ^ (idx * _KEY_INDEX))


def _bernoulli_bits(images, states):
    """Row i, pixel j: 1 if draw j of the stream with initial state ``states[i]`` is below
    ``images[i, j] / 255``, with the draw's top 24 bits compared as integers."""
    u = _draws(states, images.shape[1]) >> np.uint64(40)  # [0, 2^24)
    return u * np.uint64(255) < images.astype(np.uint64) << np.uint64(24)


def _draws(states, count):
    """Draws 1...count of the SplitMix64 streams starting at ``states``: ``[len(states), count]`` uint64."""
    with np.errstate(over="ignore"):
        # Draw j (0-based) is the SplitMix64 output of state + (j + 1) * golden = _mix(state + j * golden).
        offsets = np.arange(count, dtype=np.uint64) * _GOLDEN
        return _mix(states[:, None] + offsets[None, :])


def normals(seed, purpose, epoch, indices, dim):
    """float32 ``[len(indices), dim]`` standard normals as vae-dist's ``CounterRNG.fillNormal``
    draws them: row r from stream (seed, purpose, epoch, indices[r]), Box-Muller in float64 on
    pairs of 53-bit uniforms (u1 = 1 - first, u2 = second), r·cos(2πu2) then r·sin(2πu2)."""
    states = stream_states(seed, purpose, epoch, indices)
    pairs = (dim + 1) // 2
    u = (_draws(states, 2 * pairs) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    radius = np.sqrt(-2.0 * np.log(1.0 - u[:, 0::2]))
    angle = 2.0 * np.pi * u[:, 1::2]
    out = np.empty((len(states), 2 * pairs), dtype=np.float32)
    out[:, 0::2] = radius * np.cos(angle)
    out[:, 1::2] = radius * np.sin(angle)
    return out[:, :dim]


def eval_noise(first, count, zdim, sample=0, *, seed=HELDOUT_SEED):
    """The eps of held-out images ``first ... first + count - 1`` for ``sample`` (0-based, one of
    ``--samples``), as ``vae-dist eval`` draws it: float32 ``[count, zdim]``."""
    return normals(seed, PURPOSE_EVAL_NOISE, sample, np.arange(first, first + count), zdim)


def heldout(images_uint8, binarize="dynamic", limit=None, *, seed=HELDOUT_SEED, chunk=1024):
    """The held-out set as vae-dist evaluates it: float32 ``[N, pixels]``, N = min(limit, count).

    ``images_uint8``: ``[count, rows, cols]`` or ``[count, pixels]`` intensities 0...255 (e.g.
    ``read_idx("t10k-images-idx3-ubyte.gz")``). ``binarize``: the run's ``data.binarize``:
    ``none`` gives ``intensity * float32(1/255)``; ``static`` and ``dynamic`` both give the same
    fixed 0/1 draw keyed by ``seed`` (``HELDOUT_SEED``; change it only to test sensitivity).
    """
    if binarize not in _BINARIZATIONS:
        raise ValueError(f"binarize: expected one of {', '.join(_BINARIZATIONS)}, got {binarize!r}")
    images = np.asarray(images_uint8)
    if images.ndim < 2:
        raise ValueError(f"images: expected [count, rows, cols] or [count, pixels], got shape {images.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer) or images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"images: expected uint8 intensities 0...255, got dtype {images.dtype}")
        images = images.astype(np.uint8)
    images = images.reshape(images.shape[0], -1)
    count = images.shape[0] if limit is None else min(int(limit), images.shape[0])
    if count < 0:
        raise ValueError(f"limit: expected a non-negative number of images, got {limit}")
    images = images[:count]
    if binarize == "none":
        return images.astype(np.float32) * (np.float32(1) / np.float32(255))
    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, count, chunk):
        end = min(start + chunk, count)
        states = stream_states(seed, PURPOSE_TEST_BINARIZE, 0, np.arange(start, end))
        out[start:end] = _bernoulli_bits(images[start:end], states)
    return out


def read_idx(path):
    """Reads an IDX file (MNIST layout; raw or gzip-compressed, detected by content) into a numpy
    array of its shape, e.g. uint8 ``[10000, 28, 28]`` for ``t10k-images-idx3-ubyte.gz``."""
    path = str(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise ValueError(f"{path}: bad IDX magic {data[:4].hex()}: expected 0000 <type> <dimensions>")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: expected {header} bytes, found {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX data is {len(data) - header} bytes: expected {expected} for shape {shape}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable copy in native byte order
