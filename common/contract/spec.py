"""The executable description of DC-TTS: hyperparameters, presets, layer lists,
canonical parameter names/layouts, parameter and FLOP counts.

Every implementation (impl_torch, impl_chainer, impl_gluon) and the NumPy
reference build their networks by walking the layer lists returned here, so the
three cannot drift apart.

Sources (named in the comments):
  [paper]     Tachibana et al. 2017, arXiv 1710.08969.
  [kyubyong]  Kyubyong/dc_tts hyperparams.py / modules.py (the community recipe;
              tugstugi/pytorch-dc-tts copies its audio settings).
  [ours]      a choice this project made where the sources are silent or disagree.

Canonical array layouts (all frameworks use them natively, NCW):
  conv weight            (out, in // groups, k)
  transposed-conv weight (in, out, k)
  embedding weight       (vocab, e)
  bottleneck reduction   (in // bottleneck_ratio, in, 1)
  norm gamma / beta      (channels,)   batch-norm running mean / var (channels,)
  biases                 (out,)
Activations are (batch, channels, time) everywhere.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass
from typing import Optional

VOCAB = "PE abcdefghijklmnopqrstuvwxyz'.?"  # [kyubyong] P = padding (0), E = end of text (1)
PAD, EOS = 0, 1
# [ours] Added to the attention logits at padded text positions, so that they get weight exactly 0.
# Without it a trained Text2Mel put ~90% of each padded sentence's attention on the padding (its
# guided-attention weight is 0 there) and learned alignment only from each batch's longest sentence.
PAD_LOGIT = -1e9

NETS = ("text2mel", "ssrn")
CONVS = ("none", "sep", "super-sep", "bottleneck")
NORMS = ("none", "layer", "batch", "group")
BLOCKS = ("highway", "residual")
POSITIONS = ("none", "sinusoid")


@dataclass(frozen=True)
class Spec:
    """All hyperparameters of one DC-TTS configuration (a preset, possibly varied)."""

    name: str
    # --- model sizes ---------------------------------------------------------
    e: int = 128  # [paper] character embedding size
    d: int = 256  # [paper] Text2Mel hidden channels
    c: int = 512  # [paper] SSRN hidden channels
    n_mels: int = 80  # [paper] F
    r: int = 4  # [paper] reduction factor: Text2Mel sees every r-th mel frame; SSRN upsamples by r
    # --- variants (the seed's design space) ------------------------------------
    # how a convolution with a temporal kernel (k > 1) is factorized: none [paper] | sep (depthwise k,
    # then pointwise) | super-sep (depthwise k, then grouped pointwise) | bottleneck (1x1 down to
    # cin / bottleneck_ratio channels without bias, then the k-wide convolution from those) [ours]
    conv: str = "none"
    pointwise_groups: int = 4  # [ours] groups of the pointwise conv in super-sep
    bottleneck_ratio: int = 4  # [ours] channel reduction of the bottleneck variant
    # none [paper] | layer (over channels, after every conv) [kyubyong] | batch (per channel over
    # batch and time, padded frames included, as the frameworks' own batch norms do; training uses
    # the batch's statistics and updates running ones, evaluation uses the running ones) | group
    # (layer norm over each of norm_num_groups channel groups of a frame; a highway layer's halves
    # each split so) [ours]. No instance norm: its statistics over time would let a causal layer
    # see the future, and synthesis runs one frame at a time.
    norm: str = "none"
    # [ours] group norm: channel groups (of each highway half); a layer whose channels do not split
    # evenly (SSRN's n_mags = 513) takes the largest divisor of it that does (channel_norm_groups)
    norm_num_groups: int = 4
    norm_eps: float = 1e-5  # [ours] added to the variance (torch's LayerNorm and BatchNorm default)
    # [ours] batch norm: running = (1 - m) * running + m * batch statistic, the variance unbiased
    # (torch's convention and momentum 0.1; Chainer's decay = 1 - m; MXNet's momentum = 1 - m)
    norm_momentum: float = 0.1
    # highway [paper]: y = sig(H1) * H2 + (1 - sig(H1)) * x | residual [ours]: y = x + relu(H)
    block: str = "highway"
    alpha: float = 1.0  # channel-thinning multiplier applied to e, d, c
    dropout: float = 0.0  # [paper] none; [kyubyong] 0.05 after every conv
    # [kyubyong] normalizes (and drops out) the logits layers too (AudioDec's and SSRN's last
    # conv); False leaves them plain [ours]: layer norm over the mel channels of each frame
    # ties the frame's level to its gamma/beta, and Text2Mel then learns the mean spectrum
    # (measured: README, "Prove it speaks").
    norm_logits: bool = True
    # [ours, after Deep Voice 3 (Ping et al. 2017, arXiv 1710.07654)] positional encodings on the
    # attention's keys and queries: none [paper] | sinusoid: the logits become
    # (K + w PK)^T (Q + w PQ) / sqrt(d) + text_bias, PK[:, n] = position_encoding(d, position_rate * n)
    # for text position n, PQ[:, t] = position_encoding(d, t) for (reduced) output frame t
    # (attention_positions); R' = [V A, Q] reads the plain V and Q. No parameters. DC-TTS has no
    # positional information beyond TextEnc's receptive field, so on long sentences (over ~60-70
    # characters) attention loses its place; the encodings favour the diagonal.
    position: str = "none"
    # [ours, after Deep Voice 3] the keys' rate: reduced output frames per input character (the
    # queries' rate is 1), so that character n and frame t = position_rate * n get the same encoding,
    # the diagonal of a speaker of that speed (Deep Voice 3: the mean ratio of output to input steps;
    # 1.4: LJSpeech's mean utterance, 100 characters in 141 reduced frames at hop 256 and r = 4)
    position_rate: float = 1.4
    position_weight: float = 1.0  # [ours, after Deep Voice 3] w, the scale of the encodings added
    # --- text ------------------------------------------------------------------
    vocab: str = VOCAB
    max_chars: int = 180  # [kyubyong] longest input text (incl. end-of-text)
    max_frames: int = 210  # [kyubyong] longest output in reduced frames (~10 s)
    # --- audio -----------------------------------------------------------------
    sr: int = 22050  # [paper] LJSpeech rate
    n_fft: int = 1024  # [paper] F' = n_fft / 2 + 1 = 513
    hop: int = 256  # [paper]
    win: int = 1024  # [paper]
    preemphasis: float = 0.0  # [paper] none; [kyubyong] 0.97
    features: str = "power"  # [paper] "power": (S / max S) ** gamma; [kyubyong] "db": normalized decibels
    gamma: float = 0.6  # [paper] magnitude compression exponent (features == "power")
    eta: float = 1.3  # [paper] Griffin-Lim on |Z| ** (eta / gamma) (features == "power")
    ref_db: float = 20.0  # [kyubyong] (features == "db")
    max_db: float = 100.0  # [kyubyong] (features == "db")
    gl_power: float = 1.5  # [kyubyong] Griffin-Lim on magnitude ** gl_power (features == "db")
    gl_iters: int = 50  # [kyubyong]; the paper does not state it
    top_db: float = 60.0  # [ours] librosa.effects.trim threshold (silence trimming, [kyubyong] trims too)
    # --- training --------------------------------------------------------------
    g: float = 0.2  # [paper] guided-attention width
    lr: float = 2e-4  # [paper] Adam alpha
    beta1: float = 0.5  # [paper]
    beta2: float = 0.9  # [paper]
    eps: float = 1e-6  # [paper]
    warmup: int = 0  # [paper] no schedule; [kyubyong] 4000 (Noam warm-up then 1/sqrt decay)
    grad_clip: Optional[float] = None  # [paper] none; [kyubyong] clip every gradient element to [-1, 1]
    batch_size: int = 16  # [paper]

    def __post_init__(self):
        errors = []
        if self.conv not in CONVS:
            errors.append(f"conv={self.conv!r} is not one of {CONVS}")
        if self.norm not in NORMS:
            errors.append(f"norm={self.norm!r} is not one of {NORMS}")
        if self.block not in BLOCKS:
            errors.append(f"block={self.block!r} is not one of {BLOCKS}")
        if self.position not in POSITIONS:
            errors.append(f"position={self.position!r} is not one of {POSITIONS}")
        if not self.position_rate > 0:
            errors.append(f"position_rate={self.position_rate} must be > 0")
        if not self.position_weight >= 0:
            errors.append(f"position_weight={self.position_weight} must be >= 0")
        if self.norm_num_groups < 1:
            errors.append(f"norm_num_groups={self.norm_num_groups} must be >= 1")
        if not 0 < self.norm_momentum <= 1:
            errors.append(f"norm_momentum={self.norm_momentum} must be in (0, 1]")
        if self.pointwise_groups < 1 or self.bottleneck_ratio < 1:
            errors.append("pointwise_groups and bottleneck_ratio must be >= 1")
        if self.features not in ("power", "db"):
            errors.append(f"features={self.features!r} is not 'power' or 'db'")
        if self.r < 2 or self.r & (self.r - 1):
            errors.append(f"r={self.r} must be a power of two >= 2 (SSRN upsamples by stride-2 deconvolutions)")
        if not 0 < self.alpha <= 4:
            errors.append(f"alpha={self.alpha} must be in (0, 4]")
        if not 0 <= self.dropout < 1:
            errors.append(f"dropout={self.dropout} must be in [0, 1)")
        if len(self.vocab) != len(set(self.vocab)) or self.vocab[:2] != "PE":
            errors.append("vocab must start with 'PE' (padding, end of text) and hold no duplicates")
        if errors:
            raise ValueError("invalid DC-TTS spec: " + "; ".join(errors))

    # --- derived sizes ---------------------------------------------------------
    def _thin(self, n: int) -> int:
        return max(1, int(round(n * self.alpha)))

    @property
    def E(self) -> int:
        return self._thin(self.e)

    @property
    def D(self) -> int:
        return self._thin(self.d)

    @property
    def C(self) -> int:
        return self._thin(self.c)

    @property
    def n_mags(self) -> int:
        """F' = n_fft / 2 + 1 linear-magnitude bins."""
        return self.n_fft // 2 + 1

    @property
    def n_vocab(self) -> int:
        return len(self.vocab)

    def replace(self, **changes) -> "Spec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of every hyperparameter except the name: equal fingerprints, same model."""
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def diff(self, other: "Spec") -> dict:
        """{field: (self's value, other's value)} for every differing hyperparameter."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k != "name" and a[k] != b[k]}


PRESETS = {
    "paper": Spec(name="paper"),
    "community": Spec(
        name="community",
        n_fft=2048,  # [kyubyong] F' = 1025
        hop=276,  # [kyubyong] 12.5 ms
        win=1102,  # [kyubyong] 50 ms
        preemphasis=0.97,  # [kyubyong]
        features="db",  # [kyubyong] ref_db 20, max_db 100, clipped to [1e-8, 1]
        norm="layer",  # [kyubyong] layer norm after every conv
        dropout=0.05,  # [kyubyong]
        lr=1e-3,  # [kyubyong] peak learning rate
        beta1=0.9,  # [kyubyong] tf.train.AdamOptimizer defaults
        beta2=0.999,
        eps=1e-8,
        warmup=4000,  # [kyubyong] learning_rate_decay
        grad_clip=1.0,  # [kyubyong] tf.clip_by_value(grad, -1, 1)
        batch_size=32,  # [kyubyong]
    ),
}
# [ours] CPU-friendly sizes on the community recipe.
# Warm-up shortened so that a demo run of a few hundred steps already learns.
PRESETS["small"] = PRESETS["community"].replace(name="small", e=32, d=64, c=128, batch_size=8, warmup=400)
# [ours] the preset that learns to speak on a CPU (README, "Prove it speaks"): small's Text2Mel,
# no warm-up (it held the first 400 steps back), no dropout, plain logits layers; the paper's
# STFT (n_fft 1024, hop 256: SSRN's F' x F' convolutions cost a quarter of n_fft 2048's) and
# c = 64, so SSRN trains in minutes; a frame limit (8.4 s) for the demo corpus's sentences of
# at most 100 characters.
PRESETS["demo"] = PRESETS["small"].replace(name="demo", warmup=0, dropout=0.0, norm_logits=False, n_fft=1024,
                                           win=1024, hop=256, c=64, max_frames=180)
# [ours] the recipe that speaks prose at LJSpeech's lengths (README, "Speak English"; common.data.prose
# corpora: up to 187 characters, espeak-ng's 16 characters a second: up to ~255 reduced frames): the
# demo with positional attention, without which the attention lost its place after ~65 characters
# even in teacher forcing (aligned 0% beyond 60 characters after 4,000 steps, 73-100% with it);
# position_rate 1.3, espeak-ng's reduced frames per character (1.31 over the default prose corpus);
# residual blocks with group norm and d = 96, with which Text2Mel left the mean spectrum within
# 1,000 steps (highway blocks sat on it for 2,000-4,500) and reached an MCD-DTW 2.8-3.3 dB below it
# in every length band by 6,000 steps (highway: still above it at 8,000).
PRESETS["speak"] = PRESETS["demo"].replace(name="speak", max_chars=188, max_frames=260, position="sinusoid",
                                           position_rate=1.3, block="residual", norm="group", d=96)
PRESETS["tiny"] = PRESETS["community"].replace(
    name="tiny", e=8, d=16, c=16, n_mels=16, n_fft=256, hop=128, win=256, sr=8000, max_chars=60, max_frames=64,
    batch_size=4, lr=2e-3, warmup=0,
)  # [ours] for unit tests: 8 kHz, 16 ms hop, up to ~4 s of audio, constant lr


def get_spec(preset: str, **overrides) -> Spec:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset].replace(**overrides) if overrides else PRESETS[preset]


def parse_overrides(items) -> dict:
    """{field: value} from "FIELD=VALUE" strings (a command line's), each value converted to its
    field's type ("none" for an optional one); unknown fields and unreadable values are refused by name."""
    hints = {k: v for k, v in typing.get_type_hints(Spec).items() if k != "name"}
    out = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or field not in hints:
            raise ValueError(f"{item!r}: expected FIELD=VALUE with FIELD one of {sorted(hints)}")
        kind = hints[field]
        if typing.get_origin(kind) is typing.Union:  # Optional[...]
            if value.lower() == "none":
                out[field] = None
                continue
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        try:
            if kind is bool and value.lower() not in ("true", "false"):
                raise ValueError(value)
            out[field] = value.lower() == "true" if kind is bool else kind(value)
        except ValueError:
            raise ValueError(f"{item!r}: {field} takes a {kind.__name__} value") from None
    return out


# --- the layer lists ----------------------------------------------------------

EMBED, CONV, HIGHWAY, RESIDUAL, DECONV = "embed", "conv", "highway", "residual", "deconv"


@dataclass(frozen=True)
class Layer:
    """One layer. Its parameters are named `<name>.<param>` (see `param_shapes`).

    conv:     y = drop(act(norm(conv(x))))
    highway:  H = norm(conv(x)) with 2*cout channels (norm over each half separately,
              [kyubyong]); H1, H2 = split(H); y = drop(sig(H1)*H2 + (1-sig(H1))*x)
    residual: H = norm(conv(x)) with cout channels; y = drop(x + relu(H)) (spec.block == "residual")
    deconv:   y = drop(norm(deconv(x))), kernel `k`, stride `stride` (= k: the taps of an input
              frame never overlap), no padding: length x stride
    embed:    y = W[ids] transposed to (B, e, N)
    Causal layers pad (k-1)*dilation on the left only; non-causal ones
    (k-1)*dilation/2 on each side ("same").
    """

    name: str
    kind: str
    cin: int
    cout: int
    k: int = 1
    dilation: int = 1
    causal: bool = False
    act: Optional[str] = None  # "relu" or None
    plain: bool = False  # no normalization and no dropout (a logits layer when not spec.norm_logits)
    stride: int = 1  # deconv: the upsampling factor

    def __post_init__(self):
        if self.kind == DECONV and self.stride != self.k:
            raise ValueError(f"{self.name}: a deconvolution's stride must equal its kernel (no overlapping taps)")

    @property
    def out(self) -> int:
        """Channels of the convolution (before a highway layer's gate splits them in two)."""
        return 2 * self.cout if self.kind == HIGHWAY else self.cout

    @property
    def pad(self) -> tuple:
        """(left, right) zero padding of the time axis (conv and highway layers)."""
        total = (self.k - 1) * self.dilation
        return (total, 0) if self.causal else (total // 2, total - total // 2)


# Named constructors, the paper's notation (Table 1): a layer without its name and causality,
# which _stack adds. HC's kind follows spec.block (highway, or the residual variant).
def Embed(vocab: int, e: int) -> Layer:
    return Layer("", EMBED, vocab, e)


def C(cin: int, cout: int, k: int = 1, dil: int = 1, act: Optional[str] = None) -> Layer:
    return Layer("", CONV, cin, cout, k, dil, act=act)


def HC(s: Spec, c: int, k: int = 3, dil: int = 1) -> Layer:
    return Layer("", HIGHWAY if s.block == "highway" else RESIDUAL, c, c, k, dil)


def D(c: int, k: int = 2, stride: int = 2) -> Layer:
    return Layer("", DECONV, c, c, k, stride=stride)


def _stack(prefix: str, layer_list: list, causal: bool) -> list:
    """Name the layers <prefix>.<index>; all but the embedding take the stack's causality."""
    return [dataclasses.replace(layer, name=f"{prefix}.{i}", causal=causal and layer.kind != EMBED)
            for i, layer in enumerate(layer_list)]


def text_enc_layers(s: Spec) -> list:
    """[paper] TextEnc: embed, C(2d,1,1) ReLU, C(2d,1,1), 2x[HC(2d,3,{1,3,9,27})], 2x HC(2d,3,1), 2x HC(2d,1,1)."""
    d2 = 2 * s.D
    L = [Embed(s.n_vocab, s.E), C(s.E, d2, act="relu"), C(d2, d2)]
    L += [HC(s, d2, 3, dil) for _ in range(2) for dil in (1, 3, 9, 27)]
    L += [HC(s, d2, 3, 1)] * 2 + [HC(s, d2, 1, 1)] * 2
    return _stack("textenc", L, causal=False)


def audio_enc_layers(s: Spec) -> list:
    """[paper] AudioEnc (causal): 2x C(d,1,1) ReLU, C(d,1,1), 2x[HC(d,3,{1,3,9,27})], 2x HC(d,3,3)."""
    d = s.D
    L = [C(s.n_mels, d, act="relu"), C(d, d, act="relu"), C(d, d)]
    L += [HC(s, d, 3, dil) for _ in range(2) for dil in (1, 3, 9, 27)]
    L += [HC(s, d, 3, 3)] * 2
    return _stack("audioenc", L, causal=True)


def audio_dec_layers(s: Spec) -> list:
    """[paper] AudioDec (causal): C(d,1,1), HC(d,3,{1,3,9,27}), 2x HC(d,3,1), 3x C(d,1,1) ReLU, C(F,1,1).

    The last layer outputs logits; the network applies the sigmoid."""
    d = s.D
    L = [C(2 * d, d)] + [HC(s, d, 3, dil) for dil in (1, 3, 9, 27)] + [HC(s, d, 3, 1)] * 2
    L += [C(d, d, act="relu")] * 3 + [C(d, s.n_mels)]
    return _logits_layer(s, _stack("audiodec", L, causal=True))


def ssrn_layers(s: Spec) -> list:
    """[paper] SSRN (non-causal): C(c,1,1), HC(c,3,1), HC(c,3,3), log2(r) x [D(c,2), HC(c,3,1), HC(c,3,3)],
    D(c,2) = transposed conv, kernel 2, stride 2 ([kyubyong]'s kernel 3 "same" is not followed);
    C(2c,1,1), 2x HC(2c,3,1), C(F',1,1), 2x [C(F',1,1) ReLU], C(F',1,1) -> logits (sigmoid by the network)."""
    c, f = s.C, s.n_mags
    L = [C(s.n_mels, c), HC(s, c, 3, 1), HC(s, c, 3, 3)]
    for _ in range(int(math.log2(s.r))):
        L += [D(c, 2, stride=2), HC(s, c, 3, 1), HC(s, c, 3, 3)]
    L += [C(c, 2 * c)] + [HC(s, 2 * c, 3, 1)] * 2
    L += [C(2 * c, f)] + [C(f, f, act="relu")] * 2 + [C(f, f)]
    return _logits_layer(s, _stack("ssrn", L, causal=False))


def _logits_layer(s: Spec, layers: list) -> list:
    """The last layer (the logits) plain unless spec.norm_logits."""
    return layers[:-1] + [dataclasses.replace(layers[-1], plain=not s.norm_logits)]


def layers(s: Spec, net: str) -> dict:
    """{sub-network: [Layer, ...]} in forward order. Text2Mel's attention has no parameters:
    A = softmax over the text axis of K^T Q / sqrt(d) (spec.position: of (K + w PK)^T (Q + w PQ));
    R = V A; R' = [R, Q] (R first).
    TextEnc's output is split on the channel axis into K (first d channels) and V."""
    if net == "text2mel":
        return {"textenc": text_enc_layers(s), "audioenc": audio_enc_layers(s), "audiodec": audio_dec_layers(s)}
    if net == "ssrn":
        return {"ssrn": ssrn_layers(s)}
    raise ValueError(f"unknown network {net!r}; choose one of {NETS}")


def position_encoding(d: int, positions):
    """Sinusoidal encodings (d, len(positions)) float64 [Deep Voice 3, after Vaswani et al. 2017]:
    row 2i = sin(p / 10000^(2i/d)), row 2i+1 = cos(p / 10000^(2i/d)) (odd d: the last row a sin
    row). Every framework builds its tables from this one function. (numpy is imported here, not
    with the module: bench's workers read specs before they set their threads, which must come
    before numpy loads.)"""
    import numpy as np

    p = np.asarray(positions, np.float64)
    angles = p[None, :] / 10000.0 ** (2 * (np.arange(d)[:, None] // 2) / d)
    return np.where(np.arange(d)[:, None] % 2 == 0, np.sin(angles), np.cos(angles))


def attention_positions(s: Spec, n_text: int, n_frames: int) -> tuple:
    """(w PK (d, n_text), w PQ (d, n_frames)) float64: what spec.position "sinusoid" adds to the
    attention's keys (text positions 0..n_text-1 at position_rate frames a character) and queries
    (frames 0..n_frames-1) before their product, w = position_weight."""
    return (s.position_weight * position_encoding(s.D, [s.position_rate * n for n in range(n_text)]),
            s.position_weight * position_encoding(s.D, range(n_frames)))


def factorization(s: Spec, layer: Layer) -> str:
    """How this layer's convolution is factorized: spec.conv for a temporal kernel (k > 1) of a
    conv, highway or residual layer, else "none"."""
    return s.conv if layer.kind in (CONV, HIGHWAY, RESIDUAL) and layer.k > 1 else "none"


def is_separable(s: Spec, layer: Layer) -> bool:
    """Whether the layer is a depthwise convolution followed by a (grouped) pointwise one."""
    return factorization(s, layer) in ("sep", "super-sep")


def pointwise_groups(s: Spec, layer: Layer) -> int:
    """Groups of the layer's pointwise convolution (super-sep), else 1."""
    return s.pointwise_groups if factorization(s, layer) == "super-sep" else 1


def bottleneck_width(s: Spec, layer: Layer) -> int:
    """Channels between the bottleneck's 1x1 reduction and its k-wide convolution (0: none)."""
    return max(1, layer.cin // s.bottleneck_ratio) if factorization(s, layer) == "bottleneck" else 0


def channel_norm_groups(s: Spec, layer: Layer) -> int:
    """The channel groups a layer or group norm normalizes separately in each frame: a highway
    layer's halves (H1, H2), each split under norm=group into gcd(cout, norm_num_groups) groups
    (norm_num_groups where it divides the channels)."""
    halves = 2 if layer.kind == HIGHWAY else 1
    return halves * (math.gcd(layer.cout, s.norm_num_groups) if s.norm == "group" else 1)


def conv_taps(t_in: int, t_out: int, k: int, dilation: int, left: int) -> list:
    """For each tap j of a stride-1 convolution of t_in frames zero-padded by `left` on the
    left: (first output frame, last output frame + 1, input offset) of the output frames whose
    input frame t + j*dilation - left lies inside [0, t_in) (the im2col convolutions' layout)."""
    out = []
    for j in range(k):
        offset = j * dilation - left
        lo, hi = max(0, -offset), min(t_out, t_in - offset)
        out.append((lo, max(lo, hi), offset))
    return out


def param_shapes(s: Spec, layer: Layer) -> dict:
    """{canonical name: shape} of one layer's parameters (and batch-norm running statistics)."""
    n = layer.name
    if layer.kind == EMBED:
        return {f"{n}.weight": (layer.cin, layer.cout)}
    out, width = layer.out, bottleneck_width(s, layer)
    if layer.kind == DECONV:
        shapes = {f"{n}.weight": (layer.cin, out, layer.k)}
    elif is_separable(s, layer):
        shapes = {f"{n}.dw.weight": (layer.cin, 1, layer.k),
                  f"{n}.weight": (out, layer.cin // pointwise_groups(s, layer), 1)}
    elif width:
        shapes = {f"{n}.reduce.weight": (width, layer.cin, 1), f"{n}.weight": (out, width, layer.k)}
    else:
        shapes = {f"{n}.weight": (out, layer.cin, layer.k)}
    shapes[f"{n}.bias"] = (out,)
    if s.norm != "none" and not layer.plain:
        shapes[f"{n}.norm.gamma"] = (out,)
        shapes[f"{n}.norm.beta"] = (out,)
    if s.norm == "batch" and not layer.plain:
        shapes[f"{n}.norm.mean"] = (out,)
        shapes[f"{n}.norm.var"] = (out,)
    return shapes


def net_param_shapes(s: Spec, net: str) -> dict:
    """{canonical name: shape} of a whole network, in forward order."""
    return {k: v for group in layers(s, net).values() for layer in group for k, v in param_shapes(s, layer).items()}
