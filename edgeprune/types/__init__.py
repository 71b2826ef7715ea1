"""Artifacts that flow between stages: frozen dataclasses with a JSON round-trip and a fingerprint.

`record` holds the machinery (schema version, encoding); `device` what describes a model's interface and a target;
`results` what the stages produce. Everything is importable from `edgeprune.types`.
"""

from edgeprune.types.agent import AGENT_VERSION, BenchResult, EngineBuild, RunOutputs
from edgeprune.types.build import Budget, BuildOptions, ModelResult, PlanRound
from edgeprune.types.device import (
    Connection,
    DetectionHead,
    DeviceInfo,
    Fact,
    PowerSpec,
    Preprocessing,
    SetupCommands,
    TargetProfile,
    TensorSpec,
    ThrottleCheck,
)
from edgeprune.types.record import SCHEMA_VERSION, Record
from edgeprune.types.results import (
    Artifact,
    EnergyDetail,
    LatencyStats,
    LayerSensitivity,
    MetricComparison,
    OutputParity,
    ProfileReport,
    PrunePlan,
    Verification,
)

__all__ = [
    "AGENT_VERSION",
    "Artifact",
    "BenchResult",
    "Budget",
    "BuildOptions",
    "Connection",
    "DetectionHead",
    "DeviceInfo",
    "EnergyDetail",
    "EngineBuild",
    "Fact",
    "LatencyStats",
    "LayerSensitivity",
    "MetricComparison",
    "ModelResult",
    "OutputParity",
    "PlanRound",
    "PowerSpec",
    "Preprocessing",
    "ProfileReport",
    "PrunePlan",
    "Record",
    "RunOutputs",
    "SCHEMA_VERSION",
    "SetupCommands",
    "TargetProfile",
    "TensorSpec",
    "ThrottleCheck",
    "Verification",
]
