"""``ttsops registry list|show|promote``: inspect registered versions and move the alias by hand
(the promotion gate is checked against the version's ``metric.*`` tags unless ``--force``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from ttsops.config import RegistryConfig
from ttsops.errors import RegistryError
from ttsops.infra.tracking import Tag
from ttsops.registry.model_registry import gate_check


def _client_from_args(args: argparse.Namespace) -> tuple[Any, RegistryConfig]:
    from mlflow import MlflowClient

    from ttsops.config import load_config

    cfg = load_config(args.config) if args.config else None
    uri = args.tracking_uri
    if not uri and cfg is not None:  # the tuner's own choice: the config's, else the embedded store
        uri = cfg.tracking_uri()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryError("no tracking URI: pass --tracking_uri or --config (or set MLFLOW_TRACKING_URI)")
    reg = cfg.registry if cfg else RegistryConfig()
    if args.name:
        reg = reg.model_copy(update={"model_name": args.name})
    return MlflowClient(tracking_uri=uri, registry_uri=uri), reg


def _version(client: Any, name: str, ref: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if ref.startswith("@"):
            return client.get_model_version_by_alias(name, ref[1:])
        return client.get_model_version(name, ref)
    except MlflowException as e:
        raise RegistryError(f"model {name} {ref}: {str(e).splitlines()[0]}") from None


def _metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    return {k.removeprefix(Tag.METRIC_PREFIX): float(v) for k, v in tags.items() if k.startswith(Tag.METRIC_PREFIX)}


def _cmd_list(client: Any, reg: RegistryConfig, console: Any) -> int:
    from mlflow.exceptions import MlflowException
    from rich.table import Table

    try:
        aliases = client.get_registered_model(reg.model_name).aliases
        versions = client.search_model_versions(f"name='{reg.model_name}'")
    except MlflowException as e:
        raise RegistryError(f"model {reg.model_name}: {str(e).splitlines()[0]}") from None
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    table = Table(title=f"{reg.model_name}")
    for col in ("version", "aliases", "objective", "study", "generation", "gate", "run"):
        table.add_column(col)
    for mv in sorted(versions, key=lambda m: int(m.version)):
        t = mv.tags
        table.add_row(
            str(mv.version),
            ",".join(by_version.get(str(mv.version), [])),
            t.get(Tag.OBJECTIVE, ""),
            t.get(Tag.STUDY, ""),
            t.get(Tag.GENERATION, ""),
            t.get(Tag.GATE, "")[:40],
            mv.run_id or "",
        )
    console.print(table)
    return 0


def _cmd_show(client: Any, reg: RegistryConfig, ref: str, console: Any) -> int:
    mv = _version(client, reg.model_name, ref)
    console.print(f"{reg.model_name} version {mv.version}  aliases: {', '.join(mv.aliases) or '-'}")
    console.print(f"source: {mv.source}\nrun: {mv.run_id}\ndownload: models:/{reg.model_name}/{mv.version}")
    for k in sorted(mv.tags):
        console.print(f"  {k} = {mv.tags[k]}")
    return 0


def _cmd_promote(client: Any, reg: RegistryConfig, ref: str, alias: str, force: bool, console: Any) -> int:
    mv = _version(client, reg.model_name, ref)
    passed, reasons = gate_check(reg.promotion_gate, _metrics_from_tags(mv.tags))
    if not passed and not force:
        raise RegistryError(
            f"{reg.model_name} v{mv.version} fails the promotion gate: "
            f"{'; '.join(reasons)} (use --force to promote anyway)"
        )
    client.set_registered_model_alias(reg.model_name, alias, mv.version)
    console.print(
        f"{reg.model_name}@{alias} -> version {mv.version}" + (" (gate overridden)" if not passed else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    ap = argparse.ArgumentParser(prog="ttsops registry", description="Inspect and promote registered models.")
    ap.add_argument("--config", help="tuner config (tracking URI, model name, promotion gate)")
    ap.add_argument("--tracking_uri", help="MLflow tracking/registry URI")
    ap.add_argument("--name", help="registered model name (default: registry.model_name)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="versions with their aliases, objective and gate verdict")
    show = sub.add_parser("show", help="one version: VERSION or @ALIAS")
    show.add_argument("ref")
    promote = sub.add_parser("promote", help="move an alias to a version (gate checked)")
    promote.add_argument("ref", help="VERSION or @ALIAS")
    promote.add_argument("--alias", default=None, help="alias to move (default: registry.alias)")
    promote.add_argument("--force", action="store_true", help="promote even if the gate fails")
    args = ap.parse_args(argv)
    client, reg = _client_from_args(args)
    console = Console()
    if args.cmd == "list":
        return _cmd_list(client, reg, console)
    if args.cmd == "show":
        return _cmd_show(client, reg, args.ref, console)
    return _cmd_promote(client, reg, args.ref, args.alias or reg.alias, args.force, console)
