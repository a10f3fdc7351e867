"""Config: paper defaults, YAML + ``--key value`` overrides, presets and clear errors."""

from __future__ import annotations

import pytest
import yaml

from biomedclip.train.config import (
    ConfigError,
    TrainConfig,
    config_to_dict,
    load_config,
    load_config_with_history,
    parse_overrides,
    preset_conflicts,
)


def test_defaults_are_the_paper_recipe() -> None:
    config = TrainConfig()
    assert (config.optim.lr, config.optim.beta1, config.optim.beta2, config.optim.eps) == (5e-4, 0.9, 0.98, 1e-6)
    assert (config.optim.weight_decay, config.optim.warmup_steps, config.optim.epochs) == (0.2, 2000, 32)
    assert config.optim.batch_size * 16 == 4096
    assert config.run.precision == "bf16" and config.model.grad_checkpointing and config.loss.local_loss


def test_yaml_then_overrides_win(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": 1e-3, "epochs": 4}, "data": {"train": "a.tar"}}))
    overrides = parse_overrides(["--optim.lr", "2e-5", "--model.lock-image=true", "--eval.zeroshot", "a,b"])
    config = load_config(path, overrides)
    assert config.optim.lr == 2e-5 and config.optim.epochs == 4 and config.data.train == "a.tar"
    assert config.model.lock_image is True and config.eval.zeroshot == ["a", "b"]
    assert config.optim.grad_clip is None
    assert load_config(None, parse_overrides(["--optim.grad_clip", "1.0"])).optim.grad_clip == 1.0


def test_finetune_preset_lowers_lr_and_yaml_still_overrides(tmp_path) -> None:
    config = load_config(None, {"preset": "finetune"})
    assert config.optim.lr == 1e-5 and config.model.patch_dropout == 0.0
    path = tmp_path / "ft.yaml"
    path.write_text("preset: finetune\noptim:\n  lr: 3.0e-5\n")
    assert load_config(path).optim.lr == 3e-5


def test_command_line_preset_wins_over_the_yaml_and_keys_win_over_the_preset(tmp_path) -> None:
    """defaults < preset in the YAML < YAML < --preset < --key: the README's `--preset finetune -c tiny-cpu.yaml`."""
    path = tmp_path / "cpu.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\n  batch_size: 32\n")
    config, history = load_config_with_history(path, {"preset": "finetune"})
    assert config.optim.lr == 1e-5 and config.optim.batch_size == 32 and config.preset == "finetune"
    assert history["optim.lr"] == [(str(path), 1e-3), ("preset finetune (--preset)", 1e-5)]
    assert preset_conflicts(history) == [f"preset finetune (--preset) sets optim.lr = 1.0e-05 over 0.001 from {path}"]
    assert load_config(path, {"preset": "finetune", "optim.lr": 2e-4}).optim.lr == 2e-4
    assert load_config(path, {"optim.lr": 2e-4, "preset": "finetune"}).optim.lr == 2e-4  # order on the line: same


def test_print_config_names_the_source_of_every_value_and_stays_yaml(run_cli, tmp_path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("optim:\n  epochs: 3\n  lr: 1.0e-3\n")
    path = tmp_path / "cpu.yaml"
    path.write_text("base: base.yaml\noptim:\n  lr: 2.0e-3\n")
    out = run_cli("train", "-c", path, "--preset", "finetune", "--optim.weight_decay", "0.3", "--print-config").stdout
    lines = {line.strip().split(":")[0]: line for line in out.splitlines() if ":" in line and "#" in line}
    assert lines["lr"].endswith(f"# preset finetune (--preset), over 0.002 from {path}")
    assert lines["epochs"].endswith(f"# preset finetune (--preset), over 3 from {base}")
    assert lines["weight_decay"].endswith("# command line, over 0.1 from preset finetune (--preset)")
    assert lines["beta2"].endswith("# default") and lines["preset"].endswith("# command line")
    assert out.startswith("# precedence: defaults < a preset named in the YAML < the YAML < --preset < --key VALUE")
    expected = config_to_dict(load_config(path, {"preset": "finetune", "optim.weight_decay": 0.3}))
    assert yaml.safe_load(out) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optim.lrr", "1"], "unknown config key 'optim.lrr'"),
        (["--nope.lr", "1"], "unknown config section"),
        (["--optim.batch_size", "abc"], "optim.batch_size: expected an integer"),
        (["--optim.batch_size", "0"], "optim.batch_size must be >= 1"),
        (["--model.lock_text", "maybe"], "expected true/false"),
        (["--run.precision", "fp8"], "run.precision"),
        (["--preset", "fast"], "unknown preset"),
        (["--optim.lr"], "needs a value"),
        (["optim.lr", "1"], "expected --key value"),
    ],
)
def test_bad_overrides_name_the_key(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, parse_overrides(args))


def test_cli_prints_resolved_config_and_rejects_bad_keys(run_cli, tmp_path) -> None:
    out = run_cli("train", "--print-config", "--optim.lr", "1e-4", "--data.train", "x.tar").stdout
    resolved = yaml.safe_load(out)
    assert resolved["optim"]["lr"] == 1e-4 and resolved["optim"]["beta2"] == 0.98
    bad = run_cli("train", "--optim.nope", "1", check=False)
    assert bad.returncode == 2 and "unknown config key 'optim.nope'" in bad.stderr


def test_cli_reports_missing_shards_before_building_anything(run_cli, tmp_path) -> None:
    proc = run_cli("train", "--data.train", str(tmp_path / "train-{000000..000003}.tar"), check=False)
    assert proc.returncode == 2 and "4 shard(s) not found" in proc.stderr  # a spec naming nothing: docs/CLI.md
    assert not (tmp_path / "runs").exists()


def test_cli_short_flags_are_aliases_of_config_keys(run_cli, tmp_path) -> None:
    names = tmp_path / "names.yaml"
    names.write_text("notumor: no tumor\n")
    out = run_cli(
        "train", "--print-config", "-m", "tiny", "-s", "a/train-000000.tar", "-s", "b/train-*.tar",
        "-o", tmp_path / "run", "--device", "cpu", "-w", "3", "--class-names", names,
    ).stdout  # fmt: skip
    resolved = yaml.safe_load(out)
    assert resolved["model"]["name"] == "tiny" and resolved["data"]["train"] == "a/train-000000.tar::b/train-*.tar"
    assert resolved["run"]["output_dir"] == str(tmp_path / "run") and resolved["run"]["device"] == "cpu"
    assert resolved["data"]["workers"] == 3 and resolved["eval"]["class_names"] == str(names)
