"""Run configuration files (TOML): ``[model]``, ``[train]`` and ``[features]`` sections.

Every key must be a field of the matching dataclass; anything else is an error before any
work starts, naming the file, section and key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from recsys.features import FeatureConfig
from recsys.model import TwoTowerConfig
from recsys.tomlconf import build_dataclass, read_toml
from recsys.train import TrainConfig

CONFIGS_DIR = Path(__file__).with_name("configs")
# two-tower variants that `stylerec evaluate --variants` trains: the [model] section of
# each file replaces those fields of the run's model config
VARIANT_FILES = {"two-tower-id-only": "two_tower_id_only.toml", "two-tower-full": "two_tower_full.toml"}

_SECTIONS = {"model": TwoTowerConfig, "train": TrainConfig, "features": FeatureConfig}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RunConfig:
    model: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def to_json(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    def flat_params(self) -> dict[str, str]:
        return {f"{sec}.{k}": str(v) for sec, values in self.to_json().items() for k, v in values.items()}


def load_run_config(path: str | Path | None, overrides: dict[str, dict] | None = None) -> RunConfig:
    data: dict = {}
    if path is not None:
        path = Path(path)
        data = read_toml(path, ConfigError)
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return RunConfig(**{sec: build_dataclass(cls, data.get(sec, {}), f"{path or 'config'} [{sec}]", ConfigError) for sec, cls in _SECTIONS.items()})


def model_variant(name: str, base: TwoTowerConfig) -> TwoTowerConfig:
    """``base`` with the [model] section of the variant's config file."""
    if name not in VARIANT_FILES:
        raise ConfigError(f"unknown variant {name!r}; choose from {list(VARIANT_FILES)}")
    path = CONFIGS_DIR / VARIANT_FILES[name]
    values = read_toml(path, ConfigError).get("model", {})
    return build_dataclass(TwoTowerConfig, {**dataclasses.asdict(base), **values}, f"{path} [model]", ConfigError)
