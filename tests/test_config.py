"""Config: one clear line per problem, exit status 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.cli import main
from fedsynth.config import SiteConfig, load_toml
from fedsynth.errors import ConfigError

GOOD = """
[site]
id = "site-1"
modality = "ct"
data_dir = "data"
workdir = "work"
image_size = 64
"""


def test_load_good_site(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(GOOD)
    site = load_toml(tmp_path / "s.toml", SiteConfig, table="site")
    assert site.image_size == 64 and site.train_fraction == 0.75


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("image_size = 64", "image_size = 'big'"), "key 'image_size': Input should be a valid integer"),
        (("image_size = 64", "image_size = 4"), "key 'image_size': Input should be greater than or equal to 16"),
        (('modality = "ct"', 'modality = "xray"'), "key 'modality': Input should be 'ct', 'mri' or 'pet'"),
        (("image_size = 64", "image_sise = 64"), "key 'image_sise': unknown key"),
        (('workdir = "work"', ""), "key 'workdir': required key is missing"),
        (("image_size = 64", "train_fraction = 1.5"), "key 'train_fraction'"),
        (("image_size = 64", "[site.ingest]\nhu_window = [100, -100]"), "key 'ingest'"),
    ],
)
def test_bad_site_values(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_toml(path, SiteConfig, table="site")
    msg = str(info.value)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD.replace('modality = "ct"', 'modality = 3'))
    assert main(["data", "ingest", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "s.toml: key 'modality'" in err


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[site\nid=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(tmp_path / "s.toml", SiteConfig, table="site")


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from fedsynth.cli import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--help"])
    assert info.value.code == 0
    top = capsys.readouterr().out
    sub_action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in sub_action.choices.items():
        assert name in top
        assert sub.format_help().strip()
        for action in sub._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for leaf in action.choices.values():
                    assert "usage:" in leaf.format_help()


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "simulations").glob("*.toml")))
def test_every_bundled_scenario_loads(name):
    from fedsynth.federation.config import load_scenario

    sc = load_scenario(name)
    assert sc.name == name
