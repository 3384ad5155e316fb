"""The pipeline components whose parameters count as "the model" (weights, floors, variant
options). One tuple, imported by the light options and the heavy loaders alike."""

WEIGHT_COMPONENTS = ("transformer", "text_encoder", "vae")
