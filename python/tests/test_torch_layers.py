"""vae_dist.torch's layer-list models (model.encoder / model.decoder), without the binary.

- every entry form parses (leniently: s defaults to 1, p and op to 0) to its canonical text, and
  a bad entry is a one-line ValueError naming it;
- a conv model's state_dict() has vae-dist's names and PyTorch's shapes, in arena order;
- decode() gives flat rows (twice as wide with a learned sigma: means, then log-variances);
- output shapes are PyTorch's (conv and deconv, output padding included);
- each activation word is the PyTorch function with vae-dist's constants, and the defaults are
  relu everywhere but the decoder's last layer with parameters;
- dense-only configs build what they built before;
- encode() and decode() agree with a direct NumPy convolution (loops, no torch) to 1e-5;
- load() reads a layer-list checkpoint strictly, and names a bad entry or shape.
"""

import json
import math

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from torch.nn import functional as F  # noqa: E402

from vae_dist import torch as vt  # noqa: E402

CONV_ENCODER = ["conv 32 k4 s2 p1", "conv 64 k4 s2 p1", "flatten", "dense 256"]
CONV_DECODER = ["dense 3136", "reshape 64x7x7", "deconv 32 k4 s2 p1", "deconv 1 k4 s2 p1"]


def conv_config(**changes):
    m = {"kind": "vae", "input_size": 784, "input_shape": [1, 28, 28], "encoder": list(CONV_ENCODER),
         "decoder": list(CONV_DECODER), "zdim": 16, "likelihood": "bernoulli"}
    m.update(changes)
    return m


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want, canonical", [
    ("dense 500", vt.Layer("dense", 500), "dense 500"),
    ("dense 500 tanh", vt.Layer("dense", 500, activation="tanh"), "dense 500 tanh"),
    ("conv 32 k4 s2 p1", vt.Layer("conv", 32, 4, 2, 1), "conv 32 k4 s2 p1"),
    ("conv 32 k4", vt.Layer("conv", 32, 4, 1, 0), "conv 32 k4 s1 p0"),
    ("conv 8 p2 k5 elu", vt.Layer("conv", 8, 5, 1, 2, activation="elu"), "conv 8 k5 s1 p2 elu"),
    ("  conv\t16   k3  s2 ", vt.Layer("conv", 16, 3, 2, 0), "conv 16 k3 s2 p0"),
    ("deconv 1 k4 s2 p1 op0", vt.Layer("deconv", 1, 4, 2, 1, 0), "deconv 1 k4 s2 p1 op0"),
    ("deconv 16 k3 s2 p1 op1 none", vt.Layer("deconv", 16, 3, 2, 1, 1, activation="none"), "deconv 16 k3 s2 p1 op1 none"),
    ("deconv 4 k3", vt.Layer("deconv", 4, 3, 1, 0, 0), "deconv 4 k3 s1 p0 op0"),
    ("deconv 4 op2 s3 k5 leaky_relu", vt.Layer("deconv", 4, 5, 3, 0, 2, activation="leaky_relu"),
     "deconv 4 k5 s3 p0 op2 leaky_relu"),
    ("dense 7 softplus", vt.Layer("dense", 7, activation="softplus"), "dense 7 softplus"),
    ("dense 7 relu", vt.Layer("dense", 7, activation="relu"), "dense 7 relu"),
    ("flatten", vt.Layer("flatten"), "flatten"),
    ("reshape 64x7x7", vt.Layer("reshape", shape=(64, 7, 7)), "reshape 64x7x7"),
])
def test_every_entry_form_parses_to_its_canonical_text(text, want, canonical):
    got = vt.parse_layer(text)
    assert got == want
    assert str(got) == canonical
    assert vt.parse_layer(canonical) == got
    assert got.has_parameters == (got.kind in ("dense", "conv", "deconv"))


@pytest.mark.parametrize("text", [
    "", "   ", "dense", "dense 0", "dense -3", "dense x", "dense 5 6", "dense 5 sigmoid", "dense relu", "Dense 5",
    "dense 5.0", "dense 1_0",
    "conv", "conv 32", "conv 32 s2 p1", "conv x k4", "conv 0 k4", "conv 32 k4 op1", "conv 32 k4 k3",
    "conv 32 k4 q1", "conv 32 k0", "conv 32 k4 s0", "conv 32 k4 p-1", "conv 32 k4 s2 p1 gelu", "conv 32 4",
    "deconv 8 k3 s2 op2", "deconv 8 k3 op1", "deconv 8 k3 s2 op1 op1", "deconv 8",
    "flatten relu", "flatten 3", "reshape", "reshape 64x7", "reshape 64x7x0", "reshape 64 7 7",
    "reshape 64x7x7 relu", "reshape 4x4x4x4", "pool 2", "relu",
])
def test_a_bad_entry_is_a_value_error_naming_it(text):
    with pytest.raises(ValueError) as e:
        vt.parse_layer(text)
    message = str(e.value)
    assert repr(text) in message and "\n" not in message


def test_a_non_string_entry_is_a_value_error():
    with pytest.raises(ValueError, match="expected a string"):
        vt.parse_layer(500)


def test_a_bad_entry_in_a_config_names_its_place():
    with pytest.raises(ValueError, match=r"model\.decoder\[1\]: layer 'reshape 64x7'"):
        vt.VAE.from_config(conv_config(decoder=["dense 3136", "reshape 64x7", "deconv 1 k4 s4"]))
    with pytest.raises(ValueError, match=r"model\.encoder\[0\]: layer 'conv 32 k4 op1'"):
        vt.VAE.from_config(conv_config(encoder=["conv 32 k4 op1", "flatten"]))


@pytest.mark.parametrize("changes, pattern", [
    ({"encoder": ["conv 4 k3", "dense 10"]}, r"model\.encoder\[1\] \(dense 10\): a dense layer is fed \[4, 26, 26\]"),
    ({"encoder": ["conv 4 k3"]}, r"model\.encoder: ends with shape \[4, 26, 26\]; end it with flatten"),
    ({"encoder": ["flatten"]}, r"model\.encoder: has no dense, conv or deconv layer"),
    ({"encoder": ["conv 4 k30", "flatten"]}, r"kernel 30 is larger than the padded input 28x28"),
    ({"encoder": ["dense 10", "conv 4 k3"]}, r"a conv layer needs \[channels, height, width\], is fed \[10\]"),
    ({"decoder": ["dense 3136", "reshape 64x7x8", "deconv 1 k4 s4"]}, r"reshape to \[64, 7, 8\]"),
    ({"decoder": ["dense 3136", "reshape 64x7x7", "deconv 1 k4 s2 p1"]}, r"ends with shape \[1, 14, 14\]"),
    ({"decoder": ["dense 784", "reshape 4x14x14", "conv 4 k1"]}, r"data's examples need \[1, 28, 28\]"),
    ({"input_shape": [1, 28, 27]}, r"model\.input_shape: \[1, 28, 27\] is not \[channels, height, width\]"),
    ({"input_shape": [784]}, r"model\.input_shape"),
    ({"decoder": None}, r"give both layer lists"),
    ({"encoder": "conv 32 k4"}, r"model\.encoder: expected a list"),
])
def test_shapes_that_do_not_fit_are_one_line_value_errors(changes, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        vt.VAE.from_config(conv_config(**changes))
    assert "\n" not in str(e.value)


def test_conv_first_without_input_shape_needs_a_square_input():
    m = vt.VAE.from_config({k: v for k, v in conv_config().items() if k != "input_shape"})
    assert m.encoder["0"].in_channels == 1 and "input_shape" not in m.config()
    with pytest.raises(ValueError, match=r"a conv layer needs .* is fed \[10\]"):
        vt.VAE(10, zdim=2, encoder=["conv 2 k3", "flatten"], decoder=["dense 10"])
    flat = vt.VAE(10, zdim=2, encoder=["flatten", "dense 4"], decoder=["dense 10"])  # flatten of a flat row
    assert flat.encode(torch.zeros(3, 10))[0].shape == (3, 2)


def test_hidden_and_layer_lists_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        vt.VAE(784, [500], None, 16, encoder=CONV_ENCODER, decoder=CONV_DECODER)
    with pytest.raises(ValueError, match="input_shape is for layer lists"):
        vt.VAE(784, [500], None, 16, input_shape=[1, 28, 28])


# --- names and shapes ------------------------------------------------------------------------

def test_conv_state_dict_names_and_shapes():
    m = vt.VAE.from_config(conv_config())
    got = [(k, list(v.shape)) for k, v in m.state_dict().items()]
    assert got == [
        ("encoder.0.weight", [32, 1, 4, 4]), ("encoder.0.bias", [32]),
        ("encoder.1.weight", [64, 32, 4, 4]), ("encoder.1.bias", [64]),
        ("encoder.3.weight", [256, 3136]), ("encoder.3.bias", [256]),
        ("encoder.mu.weight", [16, 256]), ("encoder.mu.bias", [16]),
        ("encoder.logvar.weight", [16, 256]), ("encoder.logvar.bias", [16]),
        ("decoder.0.weight", [3136, 16]), ("decoder.0.bias", [3136]),
        ("decoder.2.weight", [64, 32, 4, 4]), ("decoder.2.bias", [32]),
        ("decoder.out.weight", [32, 1, 4, 4]), ("decoder.out.bias", [1]),
    ]
    assert isinstance(m.encoder["0"], torch.nn.Conv2d) and isinstance(m.decoder["out"], torch.nn.ConvTranspose2d)
    assert m.encoder["1"].stride == (2, 2) and m.encoder["1"].padding == (1, 1)
    assert list(m.state_dict()) == [k for k, _ in m.named_parameters()]  # no buffers, no extra names
    assert m.uses_layer_lists and m.hidden is None and m.decoder_hidden is None


def test_config_round_trips_in_canonical_text():
    cfg = conv_config(encoder=["conv 32 k4 s2 p1", "conv 64 k4 s2 p1 elu", "flatten", "dense 256"],
                      decoder=["dense 3136", "reshape 64x7x7", "deconv 32 k4 s2 p1", "deconv 1 k4 s2 p1"])
    m = vt.VAE.from_config(cfg)
    want = dict(cfg, decoder=["dense 3136", "reshape 64x7x7", "deconv 32 k4 s2 p1 op0", "deconv 1 k4 s2 p1 op0"])
    assert m.config() == want
    assert vt.VAE.from_config(m.config()).config() == want
    lenient = vt.VAE.from_config(conv_config(encoder=["conv 32 p1 s2 k4", "conv 64 k4 s2 p1", "flatten", "dense 256"]))
    assert lenient.config()["encoder"][0] == "conv 32 k4 s2 p1"
    g = vt.VAE.from_config(conv_config(likelihood="gaussian", sigma=0.5))
    assert g.config()["sigma"] == 0.5 and vt.VAE.from_config(g.config()).config() == g.config()


def test_decode_gives_flat_rows():
    torch.manual_seed(0)
    m = vt.VAE.from_config(conv_config())
    with torch.no_grad():
        assert m.decode(torch.randn(5, 16)).shape == (5, 784)
        mu, logvar = m.encode(torch.rand(5, 784))
        assert mu.shape == logvar.shape == (5, 16)
        assert m.elbo(torch.rand(5, 784).round(), eps=0).shape == (5,)
        assert m.decode(torch.randn(16)).shape == (784,)         # one unbatched row, as a dense model
        assert m.decode(torch.randn(0, 16)).shape == (0, 784)
    with pytest.raises(ValueError, match="rows of 783 values"):
        m.encode(torch.rand(2, 783))


def test_learned_sigma_doubles_the_channels_means_first():
    torch.manual_seed(1)
    m = vt.VAE.from_config(conv_config(decoder=CONV_DECODER[:-1] + ["deconv 2 k4 s2 p1"], likelihood="gaussian",
                                       sigma="learned"))
    assert m.decoder["out"].weight.shape == (32, 2, 4, 4)
    z = torch.randn(3, 16)
    with torch.no_grad():
        out = m.decode(z)
        h = F.relu(m.decoder["0"](z)).reshape(3, 64, 7, 7)
        raw = m.decoder["out"](F.relu(m.decoder["2"](h)))   # [3, 2, 28, 28]
        x = torch.rand(3, 784)
        mean, lv = raw[:, 0].flatten(1), raw[:, 1].flatten(1)
        want = -0.5 * (math.log(2 * math.pi) + lv + (x - mean) ** 2 * torch.exp(-lv)).sum(-1)
        assert torch.allclose(m.log_likelihood(x, out), want)
    assert out.shape == (3, 1568)
    assert torch.equal(out[:, :784], mean) and torch.equal(out[:, 784:], lv)
    flat = vt.VAE.from_config(conv_config(decoder=["dense 1568"], likelihood="gaussian", sigma="learned"))
    assert flat.decode(torch.randn(2, 16)).shape == (2, 1568)
    with pytest.raises(ValueError, match="twice the channels"):
        vt.VAE.from_config(conv_config(likelihood="gaussian", sigma="learned"))


def test_decoder_out_is_the_last_entry_with_parameters():
    m = vt.VAE.from_config(conv_config(decoder=["dense 3136", "reshape 64x7x7", "deconv 1 k4 s4", "flatten"]))
    assert [k for k in m.state_dict() if k.startswith("decoder.")] == [
        "decoder.0.weight", "decoder.0.bias", "decoder.out.weight", "decoder.out.bias"]
    assert m.decode(torch.randn(2, 16)).shape == (2, 784)
    dense = vt.VAE(6, zdim=2, encoder=["dense 5"], decoder=["dense 6"])
    assert list(dense.state_dict()) == ["encoder.0.weight", "encoder.0.bias", "encoder.mu.weight", "encoder.mu.bias",
                                        "encoder.logvar.weight", "encoder.logvar.bias", "decoder.out.weight",
                                        "decoder.out.bias"]


def test_deconv_output_padding_maps_7x7_to_14x14_as_pytorch_does():
    layer = vt.parse_layer("deconv 16 k3 s2 p1 op1")
    assert vt.layer_output_shape(layer, (8, 7, 7)) == (16, 14, 14)
    ref = torch.nn.ConvTranspose2d(8, 16, 3, stride=2, padding=1, output_padding=1)
    assert ref(torch.zeros(1, 8, 7, 7)).shape == (1, 16, 14, 14)
    assert vt.layer_output_shape(vt.parse_layer("deconv 16 k3 s2 p1"), (8, 7, 7)) == (16, 13, 13)
    m = vt.VAE(784, zdim=4, encoder=["flatten", "dense 32"],
               decoder=["dense 392", "reshape 8x7x7", "deconv 16 k3 s2 p1 op1", "deconv 1 k4 s2 p1"])
    assert m.decoder["2"].output_padding == (1, 1) and m.decoder["2"].weight.shape == (8, 16, 3, 3)
    with torch.no_grad():
        h = F.relu(m.decoder["2"](F.relu(m.decoder["0"](torch.randn(3, 4))).reshape(3, 8, 7, 7)))
    assert h.shape == (3, 16, 14, 14)
    assert m.decode(torch.randn(3, 4)).shape == (3, 784)


@pytest.mark.parametrize("kind", ["conv", "deconv"])
def test_output_shapes_are_pytorchs(kind):
    for size in (5, 7, 8):
        for k in (1, 2, 3, 4):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for op in (range(s) if kind == "deconv" else [0]):
                        if kind == "conv" and k > size + 2 * p:
                            continue
                        text = f"{kind} 3 k{k} s{s} p{p}" + (f" op{op}" if kind == "deconv" else "")
                        if kind == "conv":
                            ref = torch.nn.Conv2d(2, 3, k, stride=s, padding=p)
                        else:
                            if (size - 1) * s - 2 * p + k + op < 1:
                                continue
                            ref = torch.nn.ConvTranspose2d(2, 3, k, stride=s, padding=p, output_padding=op)
                        want = tuple(ref(torch.zeros(1, 2, size, size)).shape[1:])
                        assert vt.layer_output_shape(vt.parse_layer(text), (2, size, size)) == want, text


# --- activations -----------------------------------------------------------------------------

REFERENCE = {
    "relu": F.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, negative_slope=0.01),
    "elu": lambda t: F.elu(t, alpha=1.0),
    "tanh": torch.tanh,
    "softplus": lambda t: F.softplus(t, beta=1.0, threshold=20.0),
    "none": lambda t: t,
}


def numpy_activation(word, a):
    return {"relu": lambda: np.maximum(a, 0), "leaky_relu": lambda: np.where(a > 0, a, 0.01 * a),
            "elu": lambda: np.where(a > 0, a, np.expm1(np.minimum(a, 0))), "tanh": lambda: np.tanh(a),
            "softplus": lambda: np.where(a > 20, a, np.log1p(np.exp(np.minimum(a, 20)))), "none": lambda: a}[word]()


@pytest.mark.parametrize("word", sorted(REFERENCE))
def test_each_activation_word_is_its_function(word):
    """``dense 6 WORD`` as decoder.out: decode(z) = WORD(decoder.out(z)), pre-activations from
    -30 to 30 (softplus's threshold, ELU's and leaky ReLU's negative side included)."""
    m = vt.VAE(6, zdim=1, encoder=["dense 3"], decoder=[f"dense 6 {word}"]).double()
    with torch.no_grad():
        m.decoder["out"].weight.copy_(torch.tensor([[-3.0], [-1.0], [-0.1], [0.5], [2.0], [3.0]], dtype=torch.float64))
        m.decoder["out"].bias.zero_()
        z = torch.linspace(-10, 10, 41, dtype=torch.float64).unsqueeze(1)
        pre = m.decoder["out"](z)
        got = m.decode(z)
    assert pre.min() <= -30 and pre.max() >= 30
    assert torch.equal(got, REFERENCE[word](pre))
    assert torch.equal(vt.ACTIVATIONS[word](pre), REFERENCE[word](pre))
    assert np.allclose(got.numpy(), numpy_activation(word, pre.numpy()), rtol=1e-12, atol=1e-12)


def test_default_activations():
    """relu after every entry with parameters, but none after decoder.out; an explicit word wins."""
    torch.manual_seed(2)
    m = vt.VAE(6, zdim=2, encoder=["dense 5", "dense 4 tanh"], decoder=["dense 4", "dense 3 elu", "dense 6"]).double()
    x, z = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    e, d = m.encoder, m.decoder
    with torch.no_grad():
        h = torch.tanh(e["1"](F.relu(e["0"](x))))
        mu, logvar = m.encode(x)
        assert torch.equal(mu, e["mu"](h)) and torch.equal(logvar, e["logvar"](h))
        assert torch.equal(m.decode(z), d["out"](F.elu(d["1"](F.relu(d["0"](z))))))
    explicit = vt.VAE(6, zdim=2, encoder=["dense 5 none"], decoder=["dense 6 relu"]).double()
    with torch.no_grad():
        assert torch.equal(explicit.encode(x)[0], explicit.encoder["mu"](explicit.encoder["0"](x)))
        assert (explicit.decode(z) >= 0).all()


# --- the dense path --------------------------------------------------------------------------

DENSE_NAMES = ["encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias", "encoder.mu.weight",
               "encoder.mu.bias", "encoder.logvar.weight", "encoder.logvar.bias", "decoder.0.weight", "decoder.0.bias",
               "decoder.1.weight", "decoder.1.bias", "decoder.out.weight", "decoder.out.bias"]


def test_dense_configs_build_what_they_built_before():
    cfg = {"input_size": 784, "hidden": [500, 400], "decoder_hidden": [300, 200], "zdim": 20, "likelihood": "bernoulli"}
    m = vt.VAE.from_config(cfg)
    assert list(m.state_dict()) == DENSE_NAMES
    assert [list(v.shape) for v in m.state_dict().values()] == [
        [500, 784], [500], [400, 500], [400], [20, 400], [20], [20, 400], [20],
        [300, 20], [300], [200, 300], [200], [784, 200], [784]]
    assert m.config() == cfg and not m.uses_layer_lists and m.encoder_layers is None
    assert vt.VAE.from_config(dict(cfg, kind="vae")).config() == cfg     # a kind field changes nothing
    assert list(vt.VAE().state_dict()) == DENSE_NAMES and vt.VAE().hidden == [500, 500]
    assert vt.VAE(784, [500, 500], None, 20).decoder_hidden == [500, 500]
    g = vt.VAE.from_config({"input_size": 6, "hidden": [5], "decoder_hidden": [4], "zdim": 3,
                            "likelihood": "gaussian", "sigma": "learned"})
    assert g.decoder["out"].out_features == 12 and g.config()["sigma"] == "learned"
    torch.manual_seed(3)
    x = torch.rand(4, 784)
    with torch.no_grad():
        h = F.relu(m.encoder["1"](F.relu(m.encoder["0"](x))))
        assert torch.equal(m.encode(x)[0], m.encoder["mu"](h))
        z = torch.randn(4, 20)
        assert torch.equal(m.decode(z), m.decoder["out"](F.relu(m.decoder["1"](F.relu(m.decoder["0"](z))))))


# --- an independent forward pass: NumPy loops ---------------------------------------------------

def np_conv(x, w, b, s, p):
    """nn.Conv2d by its definition: x [C, H, W], w [O, C, k, k]."""
    c_in, height, width = x.shape
    c_out, _, k, _ = w.shape
    xp = np.zeros((c_in, height + 2 * p, width + 2 * p))
    xp[:, p:p + height, p:p + width] = x
    ho, wo = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
    out = np.empty((c_out, ho, wo))
    for o in range(c_out):
        for i in range(ho):
            for j in range(wo):
                acc = float(b[o])
                for c in range(c_in):
                    for u in range(k):
                        for v in range(k):
                            acc += w[o, c, u, v] * xp[c, i * s + u, j * s + v]
                out[o, i, j] = acc
    return out


def np_deconv(x, w, b, s, p, op):
    """nn.ConvTranspose2d by its definition (each input pixel scatters its kernel): x [C, H, W],
    w [C, O, k, k]; the full output cropped by p on each side, op more rows and columns below/right."""
    c_in, height, width = x.shape
    _, c_out, k, _ = w.shape
    ho, wo = (height - 1) * s - 2 * p + k + op, (width - 1) * s - 2 * p + k + op
    full = np.zeros((c_out, (height - 1) * s + k + op, (width - 1) * s + k + op))
    for c in range(c_in):
        for i in range(height):
            for j in range(width):
                for o in range(c_out):
                    for u in range(k):
                        for v in range(k):
                            full[o, i * s + u, j * s + v] += x[c, i, j] * w[c, o, u, v]
    out = full[:, p:p + ho, p:p + wo].copy()
    for o in range(c_out):
        out[o] += b[o]
    return out


def np_dense(x, w, b):
    out = np.empty(w.shape[0])
    for o in range(w.shape[0]):
        out[o] = float(b[o]) + sum(w[o, i] * x[i] for i in range(w.shape[1]))
    return out


TINY = {"kind": "vae", "input_size": 50, "input_shape": [2, 5, 5],
        "encoder": ["conv 3 k3 s2 p1", "conv 2 k2 tanh", "flatten", "dense 4 elu"],
        "decoder": ["dense 8 softplus", "reshape 2x2x2", "deconv 3 k3 s2 p1 op1 leaky_relu", "deconv 2 k2"],
        "zdim": 3, "likelihood": "bernoulli"}


def tiny_weights():
    """Fixed weights (float32 values) for TINY, by name."""
    rng = np.random.default_rng(7)
    m = vt.VAE.from_config(TINY)
    return {k: rng.normal(scale=0.5, size=tuple(v.shape)).astype(np.float32) for k, v in m.state_dict().items()}


def test_encode_and_decode_agree_with_numpy_loops():
    weights = tiny_weights()
    m = vt.VAE.from_config(TINY)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    rng = np.random.default_rng(8)
    rows = rng.uniform(size=(3, 50)).astype(np.float32)
    zs = rng.normal(size=(3, 3)).astype(np.float32)
    with torch.no_grad():
        mu, logvar = (t.numpy() for t in m.encode(torch.from_numpy(rows)))
        out = m.decode(torch.from_numpy(zs)).numpy()
    assert out.shape == (3, 50)
    for r in range(3):
        x = rows[r].astype(np.float64).reshape(5, 5, 2).transpose(2, 0, 1)  # a row is the [H, W, C] image
        h = np.maximum(np_conv(x, w["encoder.0.weight"], w["encoder.0.bias"], 2, 1), 0)       # [3, 3, 3]
        h = np.tanh(np_conv(h, w["encoder.1.weight"], w["encoder.1.bias"], 1, 0))             # [2, 2, 2]
        h = h.reshape(-1)                                                                     # flatten, C then H then W
        h = numpy_activation("elu", np_dense(h, w["encoder.3.weight"], w["encoder.3.bias"]))
        assert np.allclose(mu[r], np_dense(h, w["encoder.mu.weight"], w["encoder.mu.bias"]), rtol=1e-5, atol=1e-5)
        assert np.allclose(logvar[r], np_dense(h, w["encoder.logvar.weight"], w["encoder.logvar.bias"]),
                           rtol=1e-5, atol=1e-5)
        g = numpy_activation("softplus", np_dense(zs[r].astype(np.float64), w["decoder.0.weight"], w["decoder.0.bias"]))
        g = g.reshape(2, 2, 2)
        g = numpy_activation("leaky_relu", np_deconv(g, w["decoder.2.weight"], w["decoder.2.bias"], 2, 1, 1))  # [3, 4, 4]
        g = np_deconv(g, w["decoder.out.weight"], w["decoder.out.bias"], 1, 0, 0)                           # [2, 5, 5]
        assert g.shape == (2, 5, 5)
        assert np.allclose(out[r], g.transpose(1, 2, 0).reshape(-1), rtol=1e-5, atol=1e-5)  # written [H, W, C]


# --- load ------------------------------------------------------------------------------------

def write_checkpoint(path, module, model_json, drop=None, extra=None):
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items() if k != drop}
    state.update({f"adam.m.{k}": torch.zeros_like(v) for k, v in list(state.items())})
    state.update(extra or {})
    save_file(state, str(path), metadata={"format": "vae-dist/1", "model": json.dumps(model_json)})


def test_load_reads_a_layer_list_checkpoint_strictly(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(4)
    m = vt.VAE.from_config(TINY)
    path = tmp_path / "tiny.safetensors"
    write_checkpoint(path, m, TINY)
    back = vt.load(path)
    assert not back.training and back.config() == dict(
        TINY, encoder=["conv 3 k3 s2 p1", "conv 2 k2 s1 p0 tanh", "flatten", "dense 4 elu"],
        decoder=["dense 8 softplus", "reshape 2x2x2", "deconv 3 k3 s2 p1 op1 leaky_relu", "deconv 2 k2 s1 p0 op0"])
    assert list(back.state_dict()) == list(m.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in m.state_dict().items())
    x = torch.rand(2, 50)
    with torch.no_grad():
        assert torch.equal(back.elbo(x, eps=0), m.elbo(x, eps=0))
    gaussian = dict(TINY, likelihood="gaussian", sigma=0.3, decoder=TINY["decoder"][:-1] + ["deconv 4 k2"])
    with pytest.raises(ValueError, match="twice the channels"):
        vt.VAE.from_config(dict(gaussian, sigma="learned", decoder=TINY["decoder"]))
    g = vt.VAE.from_config(dict(gaussian, sigma="learned"))
    write_checkpoint(tmp_path / "g.safetensors", g, dict(gaussian, sigma="learned"))
    assert vt.load(tmp_path / "g.safetensors").config()["sigma"] == "learned"
    write_checkpoint(tmp_path / "g3.safetensors", vt.VAE.from_config(dict(TINY, likelihood="gaussian", sigma=0.3)),
                     dict(TINY, likelihood="gaussian", sigma=0.3))
    assert vt.load(tmp_path / "g3.safetensors").sigma == pytest.approx(0.3, rel=1e-7)

    write_checkpoint(tmp_path / "missing.safetensors", m, TINY, drop="decoder.2.bias")
    with pytest.raises(RuntimeError, match=r"decoder\.2\.bias"):
        vt.load(tmp_path / "missing.safetensors")
    write_checkpoint(tmp_path / "extra.safetensors", m, TINY, extra={"decoder.3.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"decoder\.3\.weight"):
        vt.load(tmp_path / "extra.safetensors")
    other = vt.VAE.from_config(dict(TINY, encoder=["conv 4 k3 s2 p1", "conv 2 k2 tanh", "flatten", "dense 4 elu"]))
    write_checkpoint(tmp_path / "shape.safetensors", other, TINY)
    with pytest.raises(RuntimeError, match=r"encoder\.0\.weight"):
        vt.load(tmp_path / "shape.safetensors")


@pytest.mark.parametrize("model_json, pattern", [
    (dict(TINY, encoder=["conv 3 k3 s2 p1", "pool 2", "flatten", "dense 4"]),
     r"metadata field 'model\.encoder\[1\]': layer 'pool 2': unknown layer"),
    (dict(TINY, encoder=["conv 3 k3 s2 p1", "dense 4"]), r"model\.encoder\[1\] \(dense 4\): a dense layer is fed"),
    (dict(TINY, decoder=[]), r"metadata field 'model\.decoder': expected a non-empty list"),
    (dict(TINY, input_shape=[2, 5, 6]), r"metadata field 'model\.input_shape'"),
    (dict(TINY, zdim=0), r"metadata field 'model\.zdim'"),
    (dict(TINY, likelihood="poisson"), r"metadata field 'model\.likelihood'"),
    (dict(TINY, likelihood="gaussian"), r"metadata field 'model\.sigma'"),
    (dict(TINY, kind="cvae"), r"checkpoint kind 'cvae' is not supported"),
])
def test_load_names_the_file_and_the_bad_field(tmp_path, model_json, pattern):
    pytest.importorskip("safetensors")
    path = tmp_path / "bad.safetensors"
    write_checkpoint(path, vt.VAE.from_config(TINY), model_json)
    with pytest.raises(ValueError, match=pattern) as e:
        vt.load(path)
    assert str(e.value).startswith(str(path) + ": ") and "\n" not in str(e.value)
