"""Model specs and their networks: MLPs, CNNs, residual nets, convolutions, the layer census."""

from memjax.models._activations import ACTIVATIONS, Activation, activation
from memjax.models._layer_census import (
    KINDS,
    LayerCensus,
    layer_census,
)
from memjax.models._parameterizations import PARAMETERIZATIONS, Parameterization
from memjax.models._patch_conv import (
    CONV_MODES,
    Conv,
    native_conv,
)
from memjax.models._registry import SPECS
from memjax.models._resnets import (
    BN_MOMENTUM,
    GROUPS,
    HE_FAN_OUT,
    NORM_EPS,
    NORMS,
    ResNet9,
    ResNet18,
    WideResNet,
)
from memjax.models._specs import (
    CNN1D,
    CNN2D,
    COMPUTE_DTYPES,
    MAX_WIDTH,
    MLP,
    ApplyFn,
    Network,
    NTDense,
    Params,
    Spec,
    State,
    build,
    build_network,
    spec_from_dict,
    spec_to_dict,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activation",
    "ApplyFn",
    "BN_MOMENTUM",
    "CNN1D",
    "CNN2D",
    "COMPUTE_DTYPES",
    "CONV_MODES",
    "Conv",
    "GROUPS",
    "HE_FAN_OUT",
    "KINDS",
    "LayerCensus",
    "MAX_WIDTH",
    "MLP",
    "NORMS",
    "NORM_EPS",
    "NTDense",
    "Network",
    "PARAMETERIZATIONS",
    "Parameterization",
    "Params",
    "ResNet18",
    "ResNet9",
    "SPECS",
    "Spec",
    "State",
    "WideResNet",
    "build",
    "build_network",
    "layer_census",
    "native_conv",
    "spec_from_dict",
    "spec_to_dict",
]
