"""Run configuration files (TOML): ``[model]``, ``[train]`` and ``[features]`` sections.

Every key must be a field of the matching dataclass; anything else is an error before any
work starts, naming the file, section and key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from recsys.features import FeatureConfig
from recsys.model import TwoTowerConfig
from recsys.train import TrainConfig

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


def _build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_run_config(path: str | Path | None, overrides: dict[str, dict] | None = None) -> RunConfig:
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return RunConfig(**{sec: _build(cls, data.get(sec, {}), f"{path or 'config'} [{sec}]") for sec, cls in _SECTIONS.items()})
