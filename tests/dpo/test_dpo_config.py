"""FlowDPOConfig: TRL names, rejected LLM-only/unknown fields, validation, YAML/JSON files."""

import json

import pytest

from dpo.config import LLM_ONLY_FIELDS, ConfigError, FlowDPOConfig, parse_override


def test_defaults_follow_trl_names_and_design():
    cfg = FlowDPOConfig()
    assert cfg.loss_type == "sigmoid" and cfg.beta_schedule == "constant"
    assert cfg.reference_mode == "frozen_copy"
    assert FlowDPOConfig(use_lora=True).reference_mode == "lora_adapters_off"
    assert (cfg.ref_model_mixup_alpha, cfg.ref_model_sync_steps) == (0.6, 512)  # TRL's TR-DPO defaults
    for name in ("beta", "label_smoothing", "sync_ref_model", "learning_rate", "gradient_accumulation_steps",
                 "max_grad_norm", "warmup_steps", "lr_scheduler_type", "num_train_epochs", "max_steps",
                 "per_device_train_batch_size", "bf16", "seed", "save_steps", "logging_steps", "gradient_checkpointing"):
        assert hasattr(cfg, name)


@pytest.mark.parametrize("field", ["max_length", "max_prompt_length", "padding_value", "truncation_mode", "rpo_alpha"])
def test_llm_only_fields_are_rejected_by_name(field):
    with pytest.raises(ConfigError, match=f"'{field}' is an LLM-only TRL DPOConfig field"):
        FlowDPOConfig.from_dict({field: 1})
    assert field in LLM_ONLY_FIELDS


def test_unknown_field_is_rejected_by_name():
    with pytest.raises(ConfigError, match="unknown config field 'betta'"):
        FlowDPOConfig.from_dict({"betta": 1.0})


@pytest.mark.parametrize(
    "values, field",
    [
        ({"beta": 0}, "beta"),
        ({"beta": -1}, "beta"),
        ({"loss_type": "kto"}, "loss_type"),
        ({"t_sampling": "cosine"}, "t_sampling"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"reference_mode": "lora_adapters_off"}, "reference_mode"),
        ({"use_lora": True, "sync_ref_model": True}, "sync_ref_model"),
        ({"use_lora": True, "reference_mode": "frozen_copy", "sync_ref_model": True}, "sync_ref_model"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"bf16": "yes"}, "bf16"),
        ({"ref_model_mixup_alpha": 0.0}, "ref_model_mixup_alpha"),
    ],
)
def test_post_init_validation_names_the_field(values, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        FlowDPOConfig.from_dict(values)


def test_yaml_and_json_files_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("beta: 500\nlearning_rate: 1e-5\nlora_target_modules: [wqkv, wo]\nuse_lora: true\n")
    cfg = FlowDPOConfig.from_file(y, overrides=dict([parse_override("max_steps=7")]))
    assert cfg.beta == 500.0 and cfg.learning_rate == 1e-5 and cfg.max_steps == 7
    assert cfg.lora_target_modules == ("wqkv", "wo")
    j = tmp_path / "c.json"
    cfg.save(j)
    again = FlowDPOConfig.from_file(j)
    assert again == cfg
    assert json.loads(j.read_text())["reference_mode"] == "lora_adapters_off"
    bad = tmp_path / "c.toml"
    bad.write_text("")
    with pytest.raises(ConfigError, match="must end in .yaml"):
        FlowDPOConfig.from_file(bad)


def test_config_module_does_not_import_torch_or_django():
    import subprocess
    import sys

    code = "import sys, dpo.config; assert 'torch' not in sys.modules and 'django' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
