"""lightkit LightningModules and the timm encoder helpers they stand on."""

from lightkit.models.classifier import ImageClassifier, build_param_groups
from lightkit.models.encoder import PretrainedWeightsError, create_encoder, encoder_data_config
from lightkit.models.heads import ClassifierHead
from lightkit.models.multitask import MultiTaskClassifier, Task

__all__ = [
    "ClassifierHead",
    "ImageClassifier",
    "MultiTaskClassifier",
    "PretrainedWeightsError",
    "Task",
    "build_param_groups",
    "create_encoder",
    "encoder_data_config",
]
