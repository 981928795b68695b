"""Feature extractors (morphology, deep EfficientNet-Lite0), PCA-50, and chunk computation.

The package computes arrays; only :mod:`ecotaxa_core.store` touches Zarr.
Extractors follow :class:`FeatureExtractor` and are built by feature set name
with :func:`get_extractor`.
"""

from ecotaxa_core.features.deep import EfficientNetLite0Extractor, load_efficientnet_lite0
from ecotaxa_core.features.extractor import (FeatureExtractor, UnknownExtractor,
                                             available_extractors, get_extractor)
from ecotaxa_core.features.morphology import MORPHO_FEATURES, MorphologyExtractor, measure_grey
from ecotaxa_core.features.pca import DEEP_SET, PCA_SET, PcaRefit, fit_pca, refit_pca
from ecotaxa_core.features.pipeline import (append_chunk, check_producer, compute_chunk,
                                            pending_objects, project_bottom_crop, split_chunks)
from ecotaxa_core.features.preprocessing import (ImageReadError, default_bottom_crop, preprocess,
                                                 read_grey, read_image)

__all__ = [
    "FeatureExtractor", "UnknownExtractor", "available_extractors", "get_extractor",
    "MorphologyExtractor", "MORPHO_FEATURES", "measure_grey",
    "EfficientNetLite0Extractor", "load_efficientnet_lite0",
    "DEEP_SET", "PCA_SET", "PcaRefit", "fit_pca", "refit_pca",
    "pending_objects", "compute_chunk", "append_chunk", "check_producer", "split_chunks",
    "project_bottom_crop",
    "ImageReadError", "default_bottom_crop", "preprocess", "read_grey", "read_image",
]
