"""The model contract: what an ONNX model must declare for CargoGate to run it.

A model has one input named ``image`` (float32, N×C×H×W, dynamic N) and one output named
``scores`` (float32, N×K probabilities). Its ``metadata_props`` carry JSON strings under the
``cargogate.*`` keys read here: the class list in output order, the input geometry, the
preprocessing, suggested thresholds, a short weights hash used as the model version, and
what it was trained on. An integrator drops in another model by config alone; everything the
service needs to know about it comes from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

INPUT_NAME = "image"
OUTPUT_NAME = "scores"
KEY_CLASSES = "cargogate.classes"
KEY_INPUT = "cargogate.input"
KEY_PREPROCESS = "cargogate.preprocess"
KEY_THRESHOLDS = "cargogate.thresholds"
KEY_VERSION = "cargogate.version"
KEY_TRAINED_ON = "cargogate.trained_on"
REQUIRED_KEYS = (KEY_CLASSES, KEY_INPUT, KEY_PREPROCESS, KEY_VERSION)


class ModelContractError(ValueError):
    """The model file does not follow the contract; the message names the key and the value."""


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """How a raw transmission image becomes the model's input tensor."""

    log_transmission: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ModelContract:
    """Everything the service reads from a model's metadata."""

    classes: tuple[str, ...]
    channels: int
    height: int
    width: int
    preprocessing: Preprocessing
    thresholds: Mapping[str, Mapping[str, float]]
    version: str
    trained_on: str

    def missing_classes(self, wanted: Iterable[str]) -> list[str]:
        """Classes in ``wanted`` this model does not score, in the order given."""
        have = set(self.classes)
        return [name for name in wanted if name not in have]


def contract_from_metadata(meta: Mapping[str, str], source: str = "model") -> ModelContract:
    """Parse and check the ``cargogate.*`` metadata; raise :class:`ModelContractError`."""
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelContractError(
            f"{source}: metadata lacks {', '.join(missing)}; a CargoGate model declares "
            f"{', '.join(REQUIRED_KEYS)} in its metadata_props (see docs/scanner-intake.md)"
        )
    classes = _json(meta, KEY_CLASSES, source)
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
    ):
        raise ModelContractError(
            f"{source}: {KEY_CLASSES} is {meta[KEY_CLASSES]!r}; expected a non-empty JSON list "
            "of class names"
        )
    if len(set(classes)) != len(classes):
        raise ModelContractError(f"{source}: {KEY_CLASSES} repeats a class name: {classes}")
    geometry = _json(meta, KEY_INPUT, source)
    channels, height, width = (_positive_int(geometry, k, KEY_INPUT, source) for k in _CHW)
    layout = geometry.get("layout", "NCHW") if isinstance(geometry, dict) else None
    if layout != "NCHW":
        raise ModelContractError(
            f"{source}: {KEY_INPUT}.layout is {layout!r}; only 'NCHW' is supported"
        )
    prep = _json(meta, KEY_PREPROCESS, source)
    if not isinstance(prep, dict):
        raise ModelContractError(f"{source}: {KEY_PREPROCESS} must be a JSON object, got {prep!r}")
    log_t = prep.get("log_transmission", False)
    if not isinstance(log_t, bool):
        raise ModelContractError(
            f"{source}: {KEY_PREPROCESS}.log_transmission is {log_t!r}; expected true or false"
        )
    mean = _per_channel(prep, "mean", channels, source, default=0.0)
    std = _per_channel(prep, "std", channels, source, default=1.0)
    if any(s <= 0 for s in std):
        raise ModelContractError(f"{source}: {KEY_PREPROCESS}.std is {list(std)}; each must be > 0")
    thresholds = _thresholds(meta, classes, source)
    version = _plain_string(meta[KEY_VERSION])
    if not version:
        raise ModelContractError(f"{source}: {KEY_VERSION} is empty; expected a weights hash")
    trained_on = _plain_string(meta.get(KEY_TRAINED_ON, ""))
    return ModelContract(
        classes=tuple(classes),
        channels=channels,
        height=height,
        width=width,
        preprocessing=Preprocessing(log_t, mean, std),
        thresholds=thresholds,
        version=version,
        trained_on=trained_on,
    )


_CHW = ("channels", "height", "width")


def _plain_string(raw: str) -> str:
    """Metadata values are JSON strings; accept a bare string as well for plain text keys."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()
    return value.strip() if isinstance(value, str) else json.dumps(value)


def _json(meta: Mapping[str, str], key: str, source: str) -> object:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelContractError(
            f"{source}: {key} is {meta[key][:80]!r}, which is not valid JSON ({exc.msg})"
        ) from None


def _positive_int(geometry: object, field: str, key: str, source: str) -> int:
    value = geometry.get(field) if isinstance(geometry, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelContractError(
            f"{source}: {key}.{field} is {value!r}; expected a positive integer"
        )
    return value


def _per_channel(
    prep: dict[str, object], field: str, channels: int, source: str, default: float
) -> tuple[float, ...]:
    value = prep.get(field, [default] * channels)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value] * channels
    if (
        not isinstance(value, list)
        or len(value) != channels
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ModelContractError(
            f"{source}: {KEY_PREPROCESS}.{field} is {value!r}; expected a list of {channels} "
            "numbers (one per channel)"
        )
    return tuple(float(v) for v in value)


def _thresholds(
    meta: Mapping[str, str], classes: list[str], source: str
) -> dict[str, dict[str, float]]:
    if KEY_THRESHOLDS not in meta:
        return {}
    raw = _json(meta, KEY_THRESHOLDS, source)
    if not isinstance(raw, dict):
        raise ModelContractError(f"{source}: {KEY_THRESHOLDS} must be a JSON object, got {raw!r}")
    out: dict[str, dict[str, float]] = {}
    for name, pair in raw.items():
        if name not in classes:
            raise ModelContractError(
                f"{source}: {KEY_THRESHOLDS} names class {name!r}, which is not in "
                f"{KEY_CLASSES} {classes}"
            )
        if not isinstance(pair, dict) or not all(
            isinstance(pair.get(k), int | float) for k in ("alarm", "clear")
        ):
            raise ModelContractError(
                f"{source}: {KEY_THRESHOLDS}.{name} is {pair!r}; expected "
                '{"alarm": number, "clear": number}'
            )
        out[name] = {"alarm": float(pair["alarm"]), "clear": float(pair["clear"])}
    return out


class PolicyClassesError(ValueError):
    """The site's policy relies on classes the configured model does not score."""


def check_policy_classes(
    contract: ModelContract, policy_classes: Iterable[str], model: str
) -> None:
    """Refuse to start when a policy class is missing from the model's class list."""
    wanted = list(policy_classes)
    missing = contract.missing_classes(wanted)
    if missing:
        raise PolicyClassesError(
            f"policy.classes names {', '.join(repr(m) for m in missing)}, which the model "
            f"{model} (version {contract.version}) does not score; the model's classes are "
            f"{list(contract.classes)}. Remove those classes from policy.classes or configure "
            "a model that scores them"
        )
