"""Pretrained tf-keras models that PyPI packages ship, retrofitted in one line.

- textgenrnn 2.0.0 (a character-level text generator): its model is built by
  code (`textgenrnn/model.py`), with a custom `AttentionWeightedAverage` layer,
  and the package ships its weights (`textgenrnn_weights.hdf5`, written by
  Keras 2.1.5 from cuDNN LSTMs, which tf-keras converts on loading) and its
  vocabulary. The input is a float `Input` of 40 character ids feeding an
  `Embedding`; two LSTMs follow.
- rnnmorph 0.4.1 (a Russian part-of-speech tagger): a JSON model config and
  its weights (`models/ru/eval_model.json`, `eval_model.h5`), read with its
  custom `ReversedLSTM` (an LSTM with `go_backwards=True` whose output is
  reversed back). Two float inputs of any sentence length: `grammemes`
  `(batch, words, 56)` and `chars` `(batch, words, 32)`, the character ids of
  each word, which go through a `TimeDistributed` around a Functional
  submodel without a recurrent layer (an `Embedding` first; the submodel is
  named `model_1`, as the whole model is); then an LSTM, the `ReversedLSTM`
  beside it and a `Bidirectional` LSTM.

The packages are not installed (their dependencies are old): `.ci/run`
downloads their archives (sdists: neither publishes a wheel) into the folder
named by `RSR_KERAS2_WHEELS`, their files are read straight from the archives,
and the models are rebuilt with the few lines of the packages' code they need,
the imports changed to `tf_keras`. Each model is checked first to be the
pretrained one (it completes text / tags a sentence as a trained model does),
then retrofitted with `rsr.add_trainable_initial_states(model)` and checked:
the same predictions on realistic inputs, the recurrent layers it gave states,
one training step that moves the states and leaves the original untouched, and
the copy saved as `.keras` and `.h5` and loaded back.
"""

from __future__ import annotations

import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import assert_same_weights, snapshot

import rnn_state_rewriter as rsr

tf_keras = pytest.importorskip("tf_keras", reason="the packages' models are tf-keras models")

pytestmark = pytest.mark.tensorflow  # tf-keras runs on TensorFlow: checked in the TensorFlow-backend run

# The files each package ships: archive, folder inside it, files of that folder.
ARCHIVES = {
    "textgenrnn": (
        "textgenrnn-2.0.0.tar.gz",
        "textgenrnn-2.0.0/textgenrnn/",
        ["textgenrnn_weights.hdf5", "textgenrnn_vocab.json"],
    ),
    "rnnmorph": (
        "rnnmorph-0.4.1.tar.gz",
        "rnnmorph-0.4.1/rnnmorph/models/ru/",
        ["eval_model.json", "eval_model.h5", "gram_input.json", "gram_output.json", "char_set.txt"],
    ),
}


def _read_member(archive: str, member: str) -> bytes:
    """A file of a wheel (a zip) or of an sdist (a tar.gz)."""
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as handle:
            return handle.read(member)
    with tarfile.open(archive) as handle:
        extracted = handle.extractfile(member)
        assert extracted is not None, f"{member} is not a file of {archive}"
        return extracted.read()


@pytest.fixture(scope="module")
def packaged_files(tmp_path_factory):
    """The files of `ARCHIVES`, from the archives in `RSR_KERAS2_WHEELS` (`.ci/run` downloads them)."""
    archives = os.environ.get("RSR_KERAS2_WHEELS", "")
    missing = sorted({a for a, _, _ in ARCHIVES.values() if not os.path.isfile(os.path.join(archives, a))})
    if missing:
        pytest.skip(
            f"set RSR_KERAS2_WHEELS to a folder holding {missing} "
            "(pip download --no-deps --no-binary=textgenrnn,rnnmorph textgenrnn==2.0.0 rnnmorph==0.4.1)"
        )
    folder = tmp_path_factory.mktemp("packaged_models")
    for package, (archive, prefix, names) in ARCHIVES.items():
        (folder / package).mkdir()
        for name in names:
            (folder / package / name).write_bytes(_read_member(os.path.join(archives, archive), prefix + name))
    return folder


@dataclass
class Packaged:
    """A package's pretrained model, with realistic inputs and training targets for it."""

    model: Any
    inputs: Any
    targets: np.ndarray
    recurrent: list[str]  # the layers the retrofit gives states
    custom_objects: dict[str, Any]
    compile_copy: Callable[[Any], None] | None = None  # for a copy of a model the package does not compile
    fresh_weights: list[np.ndarray] = field(default_factory=list)  # the weights before loading the file


# ---------------------------------------------------------------- textgenrnn 2.0.0


class AttentionWeightedAverage(tf_keras.layers.Layer):
    """textgenrnn's `AttentionWeightedAverage.py`, as it is but for the imports (`tf_keras`)."""

    def __init__(self, return_attention=False, **kwargs):
        self.init = tf_keras.initializers.get("uniform")
        self.supports_masking = True
        self.return_attention = return_attention
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.input_spec = [tf_keras.layers.InputSpec(ndim=3)]
        assert len(input_shape) == 3

        self.W = self.add_weight(
            shape=(input_shape[2], 1), name=f"{self.name}_W", trainable=True, initializer=self.init
        )
        super().build(input_shape)

    def call(self, x, mask=None):
        K = tf_keras.backend
        logits = K.dot(x, self.W)
        x_shape = K.shape(x)
        logits = K.reshape(logits, (x_shape[0], x_shape[1]))
        ai = K.exp(logits - K.max(logits, axis=-1, keepdims=True))
        if mask is not None:
            mask = K.cast(mask, K.floatx())
            ai = ai * mask
        att_weights = ai / (K.sum(ai, axis=1, keepdims=True) + K.epsilon())
        weighted_input = x * K.expand_dims(att_weights)
        result = K.sum(weighted_input, axis=1)
        if self.return_attention:
            return [result, att_weights]
        return result

    def compute_output_shape(self, input_shape):
        output_len = input_shape[2]
        if self.return_attention:
            return [(input_shape[0], output_len), (input_shape[0], input_shape[1])]
        return (input_shape[0], output_len)

    def compute_mask(self, input, input_mask=None):
        if isinstance(input_mask, list):
            return [None] * len(input_mask)
        return None


TEXTGENRNN_CONFIG = {"rnn_layers": 2, "rnn_size": 128, "max_length": 40, "dim_embeddings": 100}  # its defaults
TEXT = "Hello, world! The quick brown fox jumps over the lazy dog. I love it"


def _textgenrnn_model(num_classes: int) -> Any:
    """`textgenrnn_model(num_classes, cfg)` of `textgenrnn/model.py`: no context, not bidirectional, on CPU."""
    K, cfg = tf_keras, TEXTGENRNN_CONFIG
    inputs = K.Input(shape=(cfg["max_length"],), name="input")  # float32: the ids are fed as floats
    embedded = K.layers.Embedding(num_classes, cfg["dim_embeddings"], input_length=cfg["max_length"], name="embedding")(
        inputs
    )
    rnns = []
    for i in range(cfg["rnn_layers"]):
        rnn = K.layers.LSTM(cfg["rnn_size"], return_sequences=True, recurrent_activation="sigmoid", name=f"rnn_{i + 1}")
        rnns.append(rnn(embedded if i == 0 else rnns[-1]))
    concatenated = K.layers.concatenate([embedded, *rnns], name="rnn_concat")
    attention = AttentionWeightedAverage(name="attention")(concatenated)
    outputs = K.layers.Dense(num_classes, name="output", activation="softmax")(attention)
    return K.Model(inputs=[inputs], outputs=[outputs])


def _encode(text: list[str], vocab: dict[str, int]) -> np.ndarray:
    """`textgenrnn_encode_sequence`: the last 40 ids, left-padded with 0, as floats (the input's dtype)."""
    ids = [vocab.get(token, 0) for token in text][-TEXTGENRNN_CONFIG["max_length"] :]
    return np.pad(ids, (TEXTGENRNN_CONFIG["max_length"] - len(ids), 0)).astype("float32")


@pytest.fixture(scope="module")
def textgenrnn(packaged_files):
    folder = packaged_files / "textgenrnn"
    vocab = json.loads((folder / "textgenrnn_vocab.json").read_text(encoding="utf-8"))
    num_classes = len(vocab) + 1
    tf_keras.utils.set_random_seed(0)
    model = _textgenrnn_model(num_classes)
    fresh = snapshot(model)
    model.load_weights(str(folder / "textgenrnn_weights.hdf5"), by_name=True)
    model.compile(loss="categorical_crossentropy", optimizer=tf_keras.optimizers.Adam(4e-3))  # as textgenrnn does
    # Training samples as textgenrnn makes them: the text so far (after its meta token) -> the next character.
    tokens = ["<s>", *TEXT]
    cuts = [6, 12, 20, 31, 45, 50, 62, len(tokens) - 1]
    inputs = np.stack([_encode(tokens[:cut], vocab) for cut in cuts])
    targets = np.eye(num_classes, dtype="float32")[[vocab[token] for token in (tokens[cut] for cut in cuts)]]
    return Packaged(
        model=model,
        inputs=inputs,
        targets=targets,
        recurrent=["rnn_1", "rnn_2"],
        custom_objects={"AttentionWeightedAverage": AttentionWeightedAverage},
        fresh_weights=fresh,
    ), vocab


def test_textgenrnn_is_the_pretrained_model(textgenrnn):
    packaged, vocab = textgenrnn
    model = packaged.model
    assert all(not np.array_equal(a, b) for a, b in zip(packaged.fresh_weights, snapshot(model), strict=True))
    characters = {i: c for c, i in vocab.items()}
    y = model.predict(np.stack([_encode(["<s>", *"Hello, worl"], vocab), packaged.inputs[0]]), verbose=0)
    assert np.isfinite(y).all() and np.allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    assert characters[int(np.argmax(y[0]))] == "d" and y[0].max() > 0.9  # "Hello, worl" -> "d"
    y = model.predict(packaged.inputs, verbose=0)
    assert np.isfinite(y).all()
    assert np.argmax(y, axis=-1).min() > 0  # never the padding id


# ---------------------------------------------------------------- rnnmorph 0.4.1 (Russian)


class ReversedLSTM(tf_keras.layers.LSTM):
    """rnnmorph's `ReversedLSTM` (`rnnmorph/model.py`), as it is but for the imports (`tf_keras`)."""

    def __init__(self, units, **kwargs):
        kwargs["go_backwards"] = True
        super().__init__(units, **kwargs)

    def call(self, inputs, **kwargs):
        y_rev = super().call(inputs, **kwargs)
        return tf_keras.backend.reverse(y_rev, 1)


# Sentences, each word with the parses pymorphy2 gives it (the input; rnnmorph sums them) and its tag
# (the target, in the output's tag set). "мыла" is a verb ("washed") or a noun ("of soap").
SENTENCES = [
    [
        ("Мама", ["NOUN#Case=Nom|Gender=Fem|Number=Sing"], "NOUN#Case=Nom|Gender=Fem|Number=Sing"),
        (
            "мыла",
            ["VERB#Gender=Fem|Mood=Ind|Number=Sing|Tense=Past|VerbForm=Fin", "NOUN#Case=Gen|Gender=Neut|Number=Sing"],
            "VERB#Gender=Fem|Mood=Ind|Number=Sing|Tense=Past|VerbForm=Fin|Voice=Act",
        ),
        ("раму", ["NOUN#Case=Acc|Gender=Fem|Number=Sing"], "NOUN#Case=Acc|Gender=Fem|Number=Sing"),
        (".", ["PUNCT#_"], "PUNCT#_"),
    ],
    [
        ("Кот", ["NOUN#Case=Nom|Gender=Masc|Number=Sing"], "NOUN#Case=Nom|Gender=Masc|Number=Sing"),
        (
            "спит",
            ["VERB#Mood=Ind|Number=Sing|Person=3|Tense=Pres|VerbForm=Fin"],
            "VERB#Mood=Ind|Number=Sing|Person=3|Tense=Notpast|VerbForm=Fin|Voice=Act",
        ),
        ("на", ["ADP#_"], "ADP#_"),
        ("окне", ["NOUN#Case=Loc|Gender=Neut|Number=Sing"], "NOUN#Case=Loc|Gender=Neut|Number=Sing"),
        (".", ["PUNCT#_"], "PUNCT#_"),
    ],
    [
        ("Я", ["PRON#Case=Nom|Number=Sing|Person=1"], "PRON#Case=Nom|Number=Sing|Person=1"),
        (
            "читаю",
            ["VERB#Mood=Ind|Number=Sing|Person=1|Tense=Pres|VerbForm=Fin"],
            "VERB#Mood=Ind|Number=Sing|Person=1|Tense=Notpast|VerbForm=Fin|Voice=Act",
        ),
        ("книгу", ["NOUN#Case=Acc|Gender=Fem|Number=Sing"], "NOUN#Case=Acc|Gender=Fem|Number=Sing"),
        (".", ["PUNCT#_"], "PUNCT#_"),
    ],
]


def _rnnmorph_batch(folder) -> tuple[list[np.ndarray], np.ndarray, dict[int, str]]:
    """Inputs and targets as rnnmorph's `BatchGenerator` makes them, and the output's tag names by index.

    A word's grammemes: the sum of its parses' vectors, normalised within each
    category; its characters: their indices in the char set (the set's size
    for others), right-aligned in 32; sentences left-padded with zeros; the
    target of a word: its tag's index + 1 (0 for padding).
    """
    grammemes = json.loads((folder / "gram_input.json").read_text(encoding="utf-8"))
    tags = json.loads((folder / "gram_output.json").read_text(encoding="utf-8"))["name_to_index"]
    char_set = (folder / "char_set.txt").read_text(encoding="utf-8").rstrip()
    sizes = [
        len(values["py/set"])
        for _, values in sorted(grammemes["all_grammemes"].items())
        if isinstance(values, dict) and "py/set" in values
    ]
    width, length = sum(sizes), max(len(sentence) for sentence in SENTENCES)
    assert width == len(grammemes["vectors"][0]) == 56
    gram = np.zeros((len(SENTENCES), length, width), "float32")
    chars = np.zeros((len(SENTENCES), length, 32), "float32")  # the ids are fed as floats
    y = np.zeros((len(SENTENCES), length, 1), "int32")
    for i, sentence in enumerate(SENTENCES):
        for j, (word, parses, tag) in enumerate(sentence, start=length - len(sentence)):
            vector = sum(np.array(grammemes["vectors"][grammemes["name_to_index"][p]], "float32") for p in parses)
            start = 0
            for size in sizes:
                total = vector[start : start + size].sum()
                gram[i, j, start : start + size] = vector[start : start + size] / total if total else 0.0
                start += size
            ids = [char_set.index(c) if c in char_set else len(char_set) for c in word][-32:]
            chars[i, j, -len(ids) :] = ids
            y[i, j, 0] = tags[tag] + 1
    return [gram, chars], y, {index + 1: name for name, index in tags.items()}


def _compile_like_rnnmorph(model) -> None:
    """How rnnmorph compiles its model for training (`LSTMMorphoAnalysis.load_train`)."""
    model.compile(tf_keras.optimizers.Adam(clipnorm=5.0), loss="sparse_categorical_crossentropy")


@pytest.fixture(scope="module")
def rnnmorph(packaged_files):
    folder = packaged_files / "rnnmorph"
    tf_keras.utils.set_random_seed(0)
    custom_objects = {"ReversedLSTM": ReversedLSTM}
    model = tf_keras.models.model_from_json(  # rnnmorph's `load_eval`
        (folder / "eval_model.json").read_text(encoding="utf-8"), custom_objects=custom_objects
    )
    fresh = snapshot(model)
    model.load_weights(str(folder / "eval_model.h5"))
    inputs, targets, names = _rnnmorph_batch(folder)
    return Packaged(
        model=model,
        inputs=inputs,
        targets=targets,
        recurrent=["LSTM_1_forward", "LSTM_1_backward", "bidirectional_1"],
        custom_objects=custom_objects,
        compile_copy=_compile_like_rnnmorph,
        fresh_weights=fresh,
    ), names


def test_rnnmorph_is_the_pretrained_model(rnnmorph):
    packaged, names = rnnmorph
    model = packaged.model
    assert all(not np.array_equal(a, b) for a, b in zip(packaged.fresh_weights, snapshot(model), strict=True))
    assert [type(layer).__name__ for layer in model.get_layer("time_distributed_1").layer.layers][:2] == [
        "InputLayer",
        "Embedding",
    ]
    y = model.predict(packaged.inputs, verbose=0)
    assert y.shape == (3, 5, 253) and np.isfinite(y).all()
    for i, sentence in enumerate(SENTENCES):
        predicted = [names[int(np.argmax(p[1:])) + 1] for p in y[i, -len(sentence) :]]  # as rnnmorph reads it
        assert predicted == [tag for _, _, tag in sentence], predicted  # "мыла" too: the verb


# ---------------------------------------------------------------- the retrofit


@pytest.fixture(params=["textgenrnn", "rnnmorph"])
def packaged(request) -> Packaged:
    return request.getfixturevalue(request.param)[0]


def _predict(model, inputs) -> np.ndarray:
    return np.asarray(model.predict(inputs, verbose=0))


def test_the_retrofit_predicts_what_the_pretrained_model_predicts(packaged):
    model = packaged.model
    before = snapshot(model)
    expected = _predict(model, packaged.inputs)
    new = rsr.add_trainable_initial_states(model)
    np.testing.assert_allclose(_predict(new, packaged.inputs), expected, atol=1e-5, rtol=0)
    one = [x[:1] for x in packaged.inputs] if isinstance(packaged.inputs, list) else packaged.inputs[:1]
    np.testing.assert_allclose(_predict(new, one), expected[:1], atol=1e-5, rtol=0)  # another batch size
    states = rsr.initial_states(new)
    assert sorted(states) == sorted(packaged.recurrent)
    for name, values in states.items():
        assert all(not value.any() for value in values), name  # zeros
    assert not {id(v) for v in new.weights} & {id(v) for v in model.weights}, "a variable is shared"
    assert_same_weights(before, snapshot(model))


def test_one_training_step_moves_the_states_and_leaves_the_pretrained_model(packaged):
    model = packaged.model
    before = snapshot(model)
    expected = _predict(model, packaged.inputs)
    new = rsr.add_trainable_initial_states(model)
    if packaged.compile_copy is not None:
        packaged.compile_copy(new)
    batch = len(packaged.targets)
    history = new.fit(packaged.inputs, packaged.targets, batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for name, values in rsr.initial_states(new).items():
        assert all(value.any() for value in values), f"a state of {name} did not train"
    assert_same_weights(before, snapshot(model))
    np.testing.assert_array_equal(_predict(model, packaged.inputs), expected)


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_the_retrofit_saves_and_loads_back(packaged, extension, tmp_path):
    model = packaged.model
    new = rsr.add_trainable_initial_states(model)
    # States as if learned, so that the file must keep them: in the layers named `<recurrent layer>_initial_state`.
    state_layers = [layer for layer in new.layers if layer.name.endswith("_initial_state")]
    assert sorted(layer.name for layer in state_layers) == sorted(f"{n}_initial_state" for n in packaged.recurrent)
    rng = np.random.default_rng(0)
    for layer in state_layers:
        layer.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in layer.get_weights()])
    learned = rsr.initial_states(new)
    expected = _predict(new, packaged.inputs)
    assert np.abs(expected - _predict(model, packaged.inputs)).max() > 1e-4, "the states change nothing"
    path = str(tmp_path / f"retrofitted{extension}")
    new.save(path)
    loaded = tf_keras.models.load_model(path, custom_objects=packaged.custom_objects)
    np.testing.assert_allclose(_predict(loaded, packaged.inputs), expected, atol=1e-5, rtol=0)
    states = rsr.initial_states(loaded)
    assert sorted(states) == sorted(learned)
    for name, values in states.items():
        for value, value_set in zip(values, learned[name], strict=True):
            np.testing.assert_array_equal(value, value_set)
