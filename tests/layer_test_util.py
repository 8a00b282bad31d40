"""One helper that runs a layer through the whole Keras layer contract."""

import inspect

import keras
import numpy as np


def run_layer_contract(layer_cls, init_kwargs, input_data, tmp_path, expected_output_shape=None):
    """Config round trip (every __init__ argument), eager and symbolic calls, one fit step, save/load.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: numpy array or list of arrays (the layer's call input).
        tmp_path: pathlib.Path for the saved model.
        expected_output_shape: shape or dict of shapes of the output.
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    params = [p for p in inspect.signature(layer_cls.__init__).parameters if p not in ("self", "kwargs")]
    missing = [p for p in params if p not in config]
    assert not missing, f"get_config() lacks {missing}"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    output = layer(input_data)
    flat = output if isinstance(output, dict) else {"out": output}
    shapes = {k: tuple(v.shape) for k, v in flat.items()}
    if expected_output_shape is not None:
        want = expected_output_shape if isinstance(expected_output_shape, dict) else {"out": expected_output_shape}
        assert shapes == {k: tuple(v) for k, v in want.items()}

    inputs = (
        [keras.Input(x.shape[1:]) for x in input_data]
        if isinstance(input_data, list)
        else keras.Input(input_data.shape[1:])
    )
    symbolic = layer_cls(**init_kwargs)(inputs)
    sym_flat = symbolic if isinstance(symbolic, dict) else {"out": symbolic}
    assert {k: tuple(v.shape[1:]) for k, v in sym_flat.items()} == {k: s[1:] for k, s in shapes.items()}

    # One fit step through a model built around the layer, then save and load in safe mode.
    names = sorted(sym_flat)
    model = keras.Model(inputs, [sym_flat[k] for k in names])
    model.compile(optimizer="sgd", loss=["mse"] * len(names))
    targets = [np.zeros(shapes[k], np.float32) for k in names]
    model.fit(input_data, targets, epochs=1, batch_size=len(targets[0]), verbose=0)
    path = str(tmp_path / "layer_model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(loaded.predict(input_data, verbose=0), model.predict(input_data, verbose=0)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    return layer
