"""Learning: learning sets, classifiers, evaluation, the model registry, prediction.

>>> from ecotaxa_core.learn import CLASSIFIER_KINDS
>>> CLASSIFIER_KINDS
('classic_rf', 'deep_logreg', 'deep_rf', 'deep_mlp', 'deep_logreg_rf')
"""

from ecotaxa_core.learn.classifiers import (CLASSIFIER_KINDS, DEFAULT_FEATURE_SETS,
                                            UnknownClassifierKind, classifier_parameters,
                                            default_feature_sets, make_classifier)
from ecotaxa_core.learn.evaluation import HoldoutSplit, evaluate_holdout, holdout_split
from ecotaxa_core.learn.learning_set import (EmptyLearningSet, FeatureSetUnavailable, LearningSet,
                                             LearningSetError, build_learning_set,
                                             read_feature_sets)
from ecotaxa_core.learn.prediction import (predict_chunk, predict_project, predictable_object_ids,
                                           write_predictions)
from ecotaxa_core.learn.registry import (LoadedModel, best_model, get_model, list_models,
                                         load_model, load_model_files, save_model)
from ecotaxa_core.learn.training import (TrainingError, common_feature_sets, plan_training,
                                         train_model)
from ecotaxa_core.learn.candidates import Candidate
from ecotaxa_core.learn.learning_set import select_learning_objects
from ecotaxa_core.learn.training_settings import TrainingSettings

__all__ = [
    "CLASSIFIER_KINDS",
    "DEFAULT_FEATURE_SETS",
    "UnknownClassifierKind",
    "make_classifier",
    "default_feature_sets",
    "classifier_parameters",
    "HoldoutSplit",
    "holdout_split",
    "evaluate_holdout",
    "LearningSet",
    "LearningSetError",
    "EmptyLearningSet",
    "FeatureSetUnavailable",
    "build_learning_set",
    "read_feature_sets",
    "LoadedModel",
    "save_model",
    "get_model",
    "load_model",
    "load_model_files",
    "list_models",
    "best_model",
    "TrainingError",
    "train_model",
    "common_feature_sets",
    "predictable_object_ids",
    "predict_chunk",
    "write_predictions",
    "predict_project",
    "plan_training",
    "Candidate",
    "select_learning_objects",
    "TrainingSettings",
]
