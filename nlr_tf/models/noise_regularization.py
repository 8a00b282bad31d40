"""Hu et al. 2019: a clean net regularized by a residual net fit to noisy labels."""

import keras

from nlr_tf.layers.clean_residual_heads import CleanResidualHeads
from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_bce_with_logits

SERVED_OUTPUTS = ("g", "h")


@keras.saving.register_keras_serializable(package="nlr_tf")
class NoiseRegularizationModel(NoisyLabelModel):
    """Clean net and residual net on shared features.

    `g = sigma(c)` is fit to verified labels on the clean set D_c (`L_clean`)
    and `h = sigma(c + r)` to noisy labels on the noisy set D_n (`L_noise`),
    both by binary cross-entropy; the objective is `alpha L_clean + L_noise`.
    Inference uses g (`serve="g"`). `alpha = 0` trains h alone, and since
    `L_clean` then no longer pins c down, c alone is undetermined: such a
    model serves `h = sigma(c + r)` (`serve="h"`). `use_noisy=False` trains g
    alone on the clean set, with objective `L_clean` (the paper's two
    ablations).

    Outputs: `scores` (the served g or h), `clean_logits` (c) and
    `noisy_logits` (c + r), [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        hidden_dim: int. Hidden width of each net. Defaults to 512.
        activation: str. "sigmoid", "tanh" or "relu". Defaults to "sigmoid".
        alpha: float. Weight of `L_clean`. Defaults to 0.2.
        use_noisy: bool. Whether `L_noise` is part of the objective (False:
            g alone, `alpha` unused). Defaults to True.
        serve: str. The output the model scores with: "g" (sigma(c)) or "h"
            (sigma(c + r)). Defaults (None or "") to "h" when h is trained
            alone (`alpha = 0` with `use_noisy`), else "g".
        **kwargs: standard model arguments.

    Reference:
        Hu et al., Weakly Supervised Image Classification through Noise
        Regularization, CVPR 2019, Sec. 3.3, Eqs. 5-7.
    """

    family = "noise_regularization"
    head_part = "heads"
    loss_names = ("loss", "clean_loss", "noise_loss")

    def __init__(
        self,
        backbone,
        num_classes,
        hidden_dim=512,
        activation="sigmoid",
        alpha=0.2,
        use_noisy=True,
        serve=None,
        **kwargs,
    ):
        if alpha < 0:
            raise ValueError(f"`alpha` must be >= 0. Received: alpha={alpha}")
        if not serve:
            serve = "h" if use_noisy and alpha == 0 else "g"
        if serve not in SERVED_OUTPUTS:
            raise ValueError(f"`serve` must be one of {SERVED_OUTPUTS}. Received: serve={serve}")
        # === Layers ===
        self.clean_residual = CleanResidualHeads(
            num_classes, hidden_dim=hidden_dim, activation=activation, name="clean_residual"
        )
        if not use_noisy:
            # g alone: the residual net h adds to is in no loss, so it is not trained (and asks for no gradient).
            self.clean_residual.residual_hidden.trainable = False
            self.clean_residual.residual_output.trainable = False
        # === Functional Model ===
        features = self.features_input(backbone)
        logits = self.clean_residual(features)
        served = logits["clean_logits" if serve == "g" else "noisy_logits"]
        scores = keras.layers.Activation("sigmoid", name="scores")(served)
        heads = keras.Model(features, {"scores": scores, **logits}, name="heads")
        super().__init__(backbone, heads, num_classes, **kwargs)
        # === Config ===
        self.serve = serve
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.alpha = float(alpha)
        self.use_noisy = bool(use_noisy)

    def part_layers(self):
        return {"backbone": [self.backbone], "heads": [self.heads]}

    def losses_on_batch(self, batch, training=True):
        """`L_clean` and `L_noise` (this replica's share)."""
        _, noisy_mask, clean_mask = self.split_masks(batch, self.num_classes)
        out = self.heads(self.features(batch, training=training), training=training)
        clean_loss = masked_bce_with_logits(batch["verified_labels"], out["clean_logits"], clean_mask)
        noise_loss = masked_bce_with_logits(batch["noisy_labels"], out["noisy_logits"], noisy_mask)
        return clean_loss, noise_loss

    def train_step(self, batch):
        with self.gradient_tape() as tape:
            clean_loss, noise_loss = self.losses_on_batch(batch)
            loss = self.alpha * clean_loss + noise_loss if self.use_noisy else clean_loss
        self.apply_part_gradients(tape, loss)
        return {"loss": loss, "clean_loss": clean_loss, "noise_loss": noise_loss}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "activation": self.activation,
                "alpha": self.alpha,
                "use_noisy": self.use_noisy,
                "serve": self.serve,
            }
        )
        return config
