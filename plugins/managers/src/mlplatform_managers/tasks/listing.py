"""task=list: the catalog, with what is available locally."""

from __future__ import annotations

from typing import Any

from mlplatform.api import atomic_write_json

from ..schemas import ListTaskConfig
from . import Task, TaskContext


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


class ListTask(Task):
    name = "list"
    description = "print the model catalog with each model's local status"
    schema = ListTaskConfig

    def run(self, ctx: TaskContext, options: ListTaskConfig) -> dict[str, Any]:
        manager = ctx.manager
        rows = []
        for entry in manager.catalog:
            if options.type and entry.type != options.type:
                continue
            status = manager.status(entry)
            if options.available_only and status not in ("available", "loaded"):
                continue
            try:
                loader = type(manager.manager_for(entry)).__name__
            except Exception:
                loader = None
            rows.append({
                "name": entry.name, "type": entry.type, "status": status,
                "size": entry.size_bytes, "licence": entry.licence,
                "hashed": not entry.unhashed_files,
                "allow_unhashed": entry.allow_unhashed or entry.name in manager.allow_unhashed,
                "manager": loader, "description": entry.description,
                "catalog_file": manager.catalog.sources[entry.name],
            })
        lines = [f"Model catalog ({len(rows)} models; models dir {manager.models_dir}"
                 + (", offline" if manager.offline else "") + "):"]
        for row in rows:
            flags = []
            if not row["hashed"]:
                flags.append("UNHASHED" + (" (opted out)" if row["allow_unhashed"] else
                                           ": refused unless manager.allow_unhashed=[NAME]"))
            if row["manager"] is None:
                flags.append("no manager installed for this type")
            lines.append(
                f"  {row['name']:<28} {row['type']:<15} {row['status']:<10} "
                f"{_size(row['size']):>11}  {row['licence']}" + (f"  [{'; '.join(flags)}]" if flags else "")
            )
        print("\n".join(lines))
        path = atomic_write_json(ctx.output_dir / "catalog.json", rows)
        return {"models": rows, "path": str(path)}
