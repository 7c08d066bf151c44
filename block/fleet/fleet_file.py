"""The fleet file: the router's `--config` YAML, extended to say what each instance is.

One file format for the router, the simulator and provisioning. Beside the router settings it may hold:

```yaml
policy: block
profile: llama-2-7b-a30          # the router's fleet-wide profile (stock vLLM), also every entry's default
defaults: {max_num_seqs: 48}     # engine settings every instance, group and template starts from
instances:
  - http://10.0.0.1:8000         # a plain URL: the defaults
  - url: http://10.0.0.2:8000
    profile: llama-2-7b-a100     # engine settings: max_num_seqs, max_num_batched_tokens, num_gpu_blocks,
    max_num_seqs: 64             #   block_size, max_model_len, prefix_caching
    predictor: http://10.0.0.2:9000
    kv_events: tcp://10.0.0.2:5557
    labels: {gpu: a100}
groups:                          # the simulator's fleet: COUNT instances of each kind
  - {count: 6, profile: llama-2-7b-a100}
  - {count: 6, profile: llama-2-7b-a30, max_num_seqs: 24}
templates:                       # what provisioning adds: `default`, or the only one
  a30: {profile: llama-2-7b-a30}
```

Everything is checked when the file is read, before anything starts; an error names the file, the line
and the field (`fleet.yaml:7: instances[1].profile: unknown profile 'x' (...)`). The short form
`6:llama-2-7b-a100,6:llama-2-7b-a30[:max_num_seqs=24]` gives groups on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from block.fleet.engine_spec import ENGINE_KNOBS, EngineSpec

ENTRY_KEYS = ("profile", *ENGINE_KNOBS, "prefix_caching")
INSTANCE_KEYS = ("url", "predictor", "kv_events", "labels", *ENTRY_KEYS)
GROUP_KEYS = ("count", "labels", *ENTRY_KEYS)
FLEET_KEYS = ("instances", "groups", "templates", "defaults")


class FleetFileError(ValueError):
    """A fleet file (or short form) that cannot be used: where, which field, why."""

    def __init__(self, source: str, line: int | None, field_name: str, reason: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field_name}: {reason}" if field_name else f"{where}: {reason}")
        self.source, self.line, self.field, self.reason = source, line, field_name, reason


@dataclass(frozen=True)
class InstanceEntry:
    url: str
    engine: EngineSpec
    predictor: str | None = None
    kv_events: str | None = None  # the engine's KV-events endpoint, for when that data source lands
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupEntry:
    count: int
    engine: EngineSpec
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetSpec:
    instances: tuple[InstanceEntry, ...] = ()
    groups: tuple[GroupEntry, ...] = ()
    templates: dict[str, EngineSpec] = field(default_factory=dict)

    def engines(self) -> list[EngineSpec]:
        """One engine per simulated instance: the groups expanded, or else the listed instances."""
        if self.groups:
            return [g.engine for g in self.groups for _ in range(g.count)]
        return [i.engine for i in self.instances]

    def engine_for(self, url: str) -> EngineSpec | None:
        """The listed instance's engine, else (an instance added at run time: provisioning, POST
        /instances) the template for new instances, if any."""
        url = url.rstrip("/")
        listed = next((i.engine for i in self.instances if i.url == url), None)
        return listed if listed is not None else self.new_instance_template()

    def new_instance_template(self) -> EngineSpec | None:
        """What provisioning adds: the template named `default`, or the only one."""
        if "default" in self.templates:
            return self.templates["default"]
        return next(iter(self.templates.values())) if len(self.templates) == 1 else None

    def describe(self) -> str:
        """`6 x llama-2-7b-a100 + 6 x llama-2-7b-a30`."""
        kinds: dict[str, int] = {}
        for engine in self.engines():
            kinds[engine.label()] = kinds.get(engine.label(), 0) + 1
        return " + ".join(f"{n} x {label}" for label, n in kinds.items())


# -- reading YAML with line numbers -----------------------------------------------------------------


def _plain(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    """The node as Python values, recording each value's line (1-based) under its path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            # lines are kept under the key as checked: dashes read as underscores (`max-num-seqs`)
            name = key.replace("-", "_") if isinstance(key, str) else key
            out[key] = _plain(value_node, (*path, name), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, (*path, i), lines) for i, v in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    text = Path(path).read_text()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise FleetFileError(
            str(path), None if mark is None else mark.line + 1, "", f"not YAML: {e}"
        ) from None
    lines: dict[tuple[Any, ...], int] = {}
    return ({} if node is None else _plain(node, (), lines)), lines


# -- checking one entry ------------------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.source, self.lines = source, lines

    def fail(self, path: tuple[Any, ...], reason: str) -> FleetFileError:
        line = None
        for cut in range(len(path), -1, -1):  # the value's own line, else its nearest parent's
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        name = "".join(
            f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path)
        )
        return FleetFileError(self.source, line, name, reason)

    def integer(self, value: Any, path: tuple[Any, ...]) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(path, f"expected a whole number >= 1, got {value!r}")
        return value

    def text(self, value: Any, path: tuple[Any, ...]) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def mapping(self, value: Any, path: tuple[Any, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {value!r}")
        out = {str(k).replace("-", "_"): v for k, v in value.items()}
        for key in out:
            if key not in allowed:
                raise self.fail((*path, key), f"unknown field (known: {', '.join(allowed)})")
        return out

    def labels(self, value: Any, path: tuple[Any, ...]) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of labels, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}

    def engine(self, d: dict[str, Any], path: tuple[Any, ...], base: EngineSpec) -> EngineSpec:
        values: dict[str, Any] = {}
        if d.get("profile") is not None:
            values["profile"] = self.profile(d["profile"], (*path, "profile"))
        for knob in ENGINE_KNOBS:
            if d.get(knob) is not None:
                values[knob] = self.integer(d[knob], (*path, knob))
        if d.get("prefix_caching") is not None:
            if not isinstance(d["prefix_caching"], bool):
                raise self.fail(
                    (*path, "prefix_caching"), f"expected true or false, got {d['prefix_caching']!r}"
                )
            values["prefix_caching"] = d["prefix_caching"]
        spec = EngineSpec(**values).over(base)
        try:  # the settings must make a valid engine with the profile's defaults
            spec.replica_config()
        except ValueError as e:
            raise self.fail(path, str(e)) from None
        return spec

    def profile(self, value: Any, path: tuple[Any, ...]) -> str:
        from block.profiles.profile import load_profile

        name = self.text(value, path)
        try:
            load_profile(name)
        except ValueError as e:
            raise self.fail(path, str(e)) from None
        except (OSError, KeyError, TypeError) as e:
            raise self.fail(path, f"cannot read profile {name!r}: {e}") from None
        return name


# -- the fleet ---------------------------------------------------------------------------------------


def parse_fleet(data: dict[str, Any], source: str, lines: dict[tuple[Any, ...], int]) -> FleetSpec:
    """The fleet part of a router YAML (`data` as read, dashes or underscores in keys)."""
    check = _Checker(source, lines)
    base = EngineSpec()
    if data.get("profile") is not None:
        base = EngineSpec(profile=check.profile(data["profile"], ("profile",)))
    if data.get("defaults") is not None:
        base = check.engine(check.mapping(data["defaults"], ("defaults",), ENTRY_KEYS), ("defaults",), base)
    instances: list[InstanceEntry] = []
    seen: dict[str, int] = {}
    raw = data.get("instances", data.get("instance")) or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise check.fail(("instances",), "expected a list of URLs or instance mappings")
    for i, item in enumerate(raw):
        path: tuple[Any, ...] = ("instances", i)
        d = {"url": item} if isinstance(item, str) else check.mapping(item, path, INSTANCE_KEYS)
        if "url" not in d:
            raise check.fail(path, "missing field: url")
        url = check.text(d["url"], (*path, "url") if not isinstance(item, str) else path).rstrip("/")
        if url in seen:
            raise check.fail(path, f"duplicate URL {url} (also instances[{seen[url]}])")
        seen[url] = i
        instances.append(
            InstanceEntry(
                url,
                check.engine(d, path, base),
                None if d.get("predictor") is None else check.text(d["predictor"], (*path, "predictor")),
                None if d.get("kv_events") is None else check.text(d["kv_events"], (*path, "kv_events")),
                check.labels(d.get("labels"), (*path, "labels")),
            )
        )
    groups: list[GroupEntry] = []
    raw_groups = data.get("groups") or []
    if not isinstance(raw_groups, list):
        raise check.fail(("groups",), "expected a list of {count, profile, ...} mappings")
    for i, item in enumerate(raw_groups):
        path = ("groups", i)
        d = check.mapping(item, path, GROUP_KEYS)
        if "count" not in d:
            raise check.fail(path, "missing field: count")
        engine = check.engine(d, path, base)
        if engine.profile is None:
            raise check.fail(path, "missing field: profile (the simulator needs step times)")
        groups.append(
            GroupEntry(
                check.integer(d["count"], (*path, "count")),
                engine,
                check.labels(d.get("labels"), (*path, "labels")),
            )
        )
    templates: dict[str, EngineSpec] = {}
    raw_templates = data.get("templates") or {}
    if not isinstance(raw_templates, dict):
        raise check.fail(("templates",), "expected a mapping of name -> engine settings")
    for name, item in raw_templates.items():
        path = ("templates", name)
        templates[str(name)] = check.engine(check.mapping(item, path, ENTRY_KEYS), path, base)
    return FleetSpec(tuple(instances), tuple(groups), templates)


def split_router_yaml(path: str | Path) -> tuple[dict[str, Any], FleetSpec]:
    """A router YAML: its router settings (the fleet keys taken out, `instances` as URLs and `predictors`
    from the entries when each has one) and its fleet. Raises FleetFileError."""
    data, lines = read_yaml(path)
    source = str(path)
    if not isinstance(data, dict):
        raise FleetFileError(source, 1, "", "expected a mapping of router settings")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    fleet = parse_fleet(data, source, lines)
    settings = {k: v for k, v in data.items() if k not in FLEET_KEYS}
    if "instances" in data or "instance" in data:
        settings.pop("instance", None)
        settings["instances"] = [e.url for e in fleet.instances]
        given = [e.predictor for e in fleet.instances if e.predictor]
        if given and len(given) != len(fleet.instances):
            missing = next(i for i, e in enumerate(fleet.instances) if not e.predictor)
            raise _Checker(source, lines).fail(
                ("instances", missing), "missing field: predictor (give one for every instance or none)"
            )
        if given:
            settings["predictors"] = given
    # An entry's KV-events endpoint joins the router's `kv_events` mapping (URL -> endpoint).
    events = {e.url: e.kv_events for e in fleet.instances if e.kv_events}
    if events:
        top = settings.get("kv_events") or {}
        settings["kv_events"] = (
            {**top, **events} if isinstance(top, dict) else top
        )  # a bad mapping: the router says
    return settings, fleet


def parse_short(text: str) -> FleetSpec:
    """`6:llama-2-7b-a100,6:llama-2-7b-a30:max_num_seqs=24`: groups of COUNT:PROFILE[:KEY=VALUE...]."""
    groups = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        where = ("groups", i)
        check = _Checker("--fleet", {})
        bits = part.split(":")
        if len(bits) < 2 or not bits[0].strip().isdigit():
            raise FleetFileError(
                "--fleet", None, f"groups[{i}]", f"write COUNT:PROFILE[:KEY=VALUE...], got {part!r}"
            )
        d: dict[str, Any] = {"count": int(bits[0]), "profile": bits[1].strip()}
        for kv in bits[2:]:
            key, sep, value = kv.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in ENTRY_KEYS or key == "profile":
                raise FleetFileError(
                    "--fleet",
                    None,
                    f"groups[{i}]",
                    f"bad setting {kv!r} (known: {', '.join(ENTRY_KEYS[1:])})",
                )
            d[key] = yaml.safe_load(value)
        groups.append(
            GroupEntry(check.integer(d["count"], (*where, "count")), check.engine(d, where, EngineSpec()))
        )
    return FleetSpec(groups=tuple(groups))


def load_fleet(spec: str) -> FleetSpec:
    """`--fleet FILE|SHORT`: a fleet file's groups (else its instances), or the short form."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise FleetFileError(spec, None, "", "no such file")
        _, fleet = split_router_yaml(path)
        if not fleet.engines():
            raise FleetFileError(spec, None, "groups", "the file lists no groups or instances")
        return fleet
    return parse_short(spec)
