"""Run configuration: precedence of defaults, TOML, flags and --set; checked values; errors that
name the setting, the value, the valid choices and the file and line."""

from __future__ import annotations

import dataclasses
import sys
import typing

import pytest

from mpicomp.algorithms import ALGORITHMS, DIANA
from mpicomp.config import COMMON_SETTINGS, Config, ConfigError, Theory, parse_config
from mpicomp.run import settings_of

SETTINGS = COMMON_SETTINGS + DIANA.settings


def parse(argv, **kw):
    return parse_config(argv, SETTINGS, prog="test", **kw)


def test_built_in_defaults_then_app_defaults():
    cfg = parse([])
    assert ((cfg.lr, cfg.alpha, cfg.iters, cfg.compressor, cfg.l2)
            == ("theory", "theory", 200, "identity", 1e-3))
    assert parse([], defaults={"compressor": "natural", "iters": 7}).iters == 7


def test_precedence_toml_then_flags_then_set(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('iters = 50\nlr = 0.25\ncompressor = "qsgd:s=4"\nresume = true\nalpha = 0.5\n')
    cfg = parse(["--config", str(toml), "--iters", "60", "--set", "iters=70",
                 "--set", "momentum=0.9"], defaults={"iters": 5})
    # --set wins over the flag, the flag over the file, the file over defaults
    assert cfg.iters == 70
    assert ((cfg.lr, cfg.compressor, cfg.resume, cfg.alpha, cfg.momentum)
            == (0.25, "qsgd:s=4", True, 0.5, 0.9))
    assert parse(["--config", str(toml), "--lr", "theory"]).lr == "theory"


def test_values_are_converted_and_dashes_work_in_set():
    cfg = parse(["--log-every", "3", "--resume", "--set", "checkpoint-every=4",
                 "--set", "reference=off"])
    assert (cfg.log_every, cfg.resume, cfg.checkpoint_every, cfg.reference) == (3, True, 4, False)
    assert parse(["--resume", "false"]).resume is False


@pytest.mark.parametrize("argv,fragments", [
    (["--iters", "ten"], ["iters (from --iters)", "expected an integer", "'ten'"]),
    (["--iters", "-1"], ["iters (from --iters): -1 is out of range", "[0, inf]"]),
    (["--lr", "0"], ["lr (from --lr): 0.0 is out of range", "(0, inf]"]),
    (["--lr", "fast"], ["expected a number or 'theory'"]),
    (["--alpha", "1.5"], ["alpha (from --alpha): 1.5 is out of range", "[0, 1]"]),
    (["--momentum", "1"], ["momentum", "[0, 1)"]),
    (["--lr", "nan"], ["must be finite"]),
    (["--problem", "svm"], ["'svm' is not valid; choose one of least_squares, lasso, logistic, "
                            "mlp, softmax"]),
    (["--compressor", "qsgd:s=0"], ["compressor (from --compressor)", "s"]),
    (["--compressor", "zip"], ["unknown compressor 'zip'", "natural"]),
    (["--network", "5g"], ["unknown network profile '5g'", "10gbe"]),
    (["--resume", "maybe"], ["expected true or false"]),
    (["--set", "lr"], ["write --set key=value"]),
    (["--set", "lrate=1"], ["unknown setting 'lrate' in --set", "valid:", "log_every"]),
    (["--iter", "3"], ["unknown flag '--iter'", "did you mean '--iters'", "--compressor"]),
    (["extra"], ["unknown flag 'extra'"]),
])
def test_bad_values_name_the_setting_and_the_valid_choices(argv, fragments):
    with pytest.raises(ConfigError) as info:
        parse(argv)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_toml_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("iters = 5\nlr = = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: .*line 2"):
        parse(["--config", str(bad)])
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("# a comment\niters = 5\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError,
                       match=r"unknown setting 'learning_rate' in .*unknown\.toml \(line 3\)"):
        parse(["--config", str(unknown)])
    table = tmp_path / "table.toml"
    table.write_text("[lr]\nvalue = 1\n")
    with pytest.raises(ConfigError, match="settings are flat"):
        parse(["--config", str(table)])
    typed = tmp_path / "typed.toml"
    typed.write_text('iters = "many"\n')
    with pytest.raises(ConfigError, match=r"iters \(from .*typed\.toml\): expected an integer"):
        parse(["--config", str(typed)])
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        parse(["--config", str(tmp_path / "missing.toml")])


def test_config_is_read_only_and_round_trips_through_json_and_pickle():
    import json
    import pickle

    cfg = parse(["--lr", "0.5"])
    with pytest.raises(AttributeError):
        cfg.lr = 1.0
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.replace(lr=0.1).lr == 0.1 and cfg.lr == 0.5


def test_help_needs_no_mpi():
    import subprocess
    from pathlib import Path

    code = ("import sys, apps.diana; rc = apps.diana.main(['--help']); "
            "assert 'mpi4py.MPI' not in sys.modules, 'MPI was started'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--compressor", "--alpha", "--checkpoint-every", "--set KEY=VALUE", "--resume"):
        assert flag in out.stdout
    assert "dither:p=inf,s=1" in out.stdout  # the app's own default is shown


#: the field type of a setting of each `Setting.type`
FIELD_TYPES = {"text": str, "bool": bool, "int": int, "float": float, "theory": Theory}


def test_config_fields_are_every_setting_of_every_algorithm_with_its_type():
    """A new Setting needs a Config field; Optional (default None) iff an algorithm lacks it."""
    used = {name: settings_of(name) for name in ALGORITHMS}
    types: dict = {}
    for settings in used.values():
        for s in settings:
            types.setdefault(s.name, set()).add(s.type)
    assert all(len(kinds) == 1 for kinds in types.values()), types  # one type per name
    hints = typing.get_type_hints(Config)
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(fields) == set(types)
    for name, (kind,) in types.items():
        everywhere = all(name in {s.name for s in settings} for settings in used.values())
        expected = FIELD_TYPES[kind] if everywhere else FIELD_TYPES[kind] | None
        assert hints[name] == expected, name
        assert fields[name].default is (dataclasses.MISSING if everywhere else None), name


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_a_run_uses_its_settings_and_the_others_are_none(algorithm):
    settings = settings_of(algorithm)
    cfg = parse_config([], settings, prog="test")
    assert cfg.names == tuple(s.name for s in settings)  # the fields follow every algorithm's order
    assert cfg.as_dict() == {s.name: s.default for s in settings}
    unused = [f.name for f in dataclasses.fields(Config) if f.name not in cfg.names]
    assert all(getattr(cfg, name) is None for name in unused)
    assert (cfg.compressor is None) == (algorithm in ("dpsgd", "signsgd"))


def test_replace_from_dict_and_repr():
    cfg = parse([])
    assert cfg.byzantine is None and "byzantine" not in cfg.to_json()
    attacked = cfg.replace(byzantine=2)
    assert attacked.as_dict() == {**cfg.as_dict(), "byzantine": 2} and attacked != cfg
    assert attacked.replace(byzantine=None) == cfg
    assert hash(attacked.replace(byzantine=None)) == hash(cfg)
    assert eval(repr(cfg), {"Config": Config}) == cfg
    with pytest.raises(ConfigError, match="unknown setting 'lrate' in Config.replace"):
        cfg.replace(lrate=1)
    with pytest.raises(ConfigError, match="unknown setting 'lrate' in Config"):
        Config.from_dict({**cfg.as_dict(), "lrate": 1})
    with pytest.raises(ConfigError, match="missing iters"):
        Config.from_dict({k: v for k, v in cfg.as_dict().items() if k != "iters"})
    with pytest.raises(ConfigError, match="every algorithm uses iters"):
        cfg.replace(iters=None)
