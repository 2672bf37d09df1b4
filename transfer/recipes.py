"""Finding recipe files: a path, or a name under the project's recipes/ folder."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, suggest


def recipes_dirs() -> list[Path]:
    """./recipes (the user's project), then the recipes/ folder shipped beside the package."""
    return [Path("recipes"), Path(__file__).resolve().parents[1] / "recipes"]


def find_recipe(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    candidates = [name] if name.endswith((".yaml", ".yml")) else [name, f"{name}.yaml"]
    for folder in recipes_dirs():
        for c in candidates:
            if (folder / c).is_file():
                return folder / c
    known = sorted({str(p.relative_to(f)) for f in recipes_dirs() if f.is_dir() for p in f.rglob("*.yaml")})
    raise ConfigError(f"recipe {name!r} not found (looked at {path} and in "
                      f"{', '.join(str(f) for f in recipes_dirs())}){suggest(name, known)}")
