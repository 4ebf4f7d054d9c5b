"""Settings are declared once: the typed attribute, validation, aliases and docs all come from one Setting."""

from __future__ import annotations

import pytest

from redis_consumer.consumers.base import Consumer
from redis_consumer.errors import ConfigError
from redis_consumer.settings import SPECS, Settings, markdown_table, spec
from redis_consumer.settings_base import Setting, SettingsBase


def test_every_declaration_is_the_class_attribute_and_the_table_row():
    assert [s.name for s in SPECS] == [name for name, v in vars(Settings).items() if isinstance(v, Setting)]
    s = Settings.from_env({})
    table = markdown_table()
    for declared in SPECS:
        assert getattr(Settings, declared.name) is declared is spec(declared.name)
        assert getattr(s, declared.name) == declared.default or declared.name == "HOSTNAME"
        assert declared.row() in table


def test_a_misnamed_declaration_is_refused():
    with pytest.raises((TypeError, RuntimeError)):  # RuntimeError wraps it before Python 3.12
        class Broken(SettingsBase):
            QUEUE = Setting("QUEUES", str, "q")


def test_kiosk_defaults_and_old_names():
    s = Settings.from_env({})
    assert (s.NUCLEAR_MODEL, s.CYTOPLASM_MODEL, s.PHASE_MODEL) == (
        "NuclearSegmentation:6", "CytoplasmSegmentation:5", "PhaseCytoSegmentation:0")
    assert (s.MESMER_MODEL, s.MESMER_COMPARTMENT, s.POLARIS_MODEL) == ("MultiplexSegmentation:9", "whole-cell",
                                                                       "SpotDetection:3")
    assert (s.POLARIS_THRESHOLD, s.POLARIS_CLIP, s.CALIBAN_MODEL, s.NEIGHBORHOOD_ENCODER) == (
        0.95, False, "NuclearTrackingInf:6", "NuclearTrackingNE:6")
    assert (s.MAX_DISTANCE, s.APPEARANCE_DIM, s.BIRTH, s.DEATH, s.DIVISION, s.TRACK_LENGTH, s.CROP_MODE) == (
        50, 32, 0.99, 0.99, 0.9, 8, "resize")
    assert s.NORMALIZE_TRACKING is True and s.DRIFT_CORRECT_ENABLED is False
    assert s.SEGMENTATION_QUEUE == "segmentation" and s.MAX_IMAGE_CHANNELS == 16 and s.MAX_IMAGE_FRAMES == 64
    old = Settings.from_env({"MULTIPLEX_MODEL": "MultiplexSegmentation:7", "TRACKING_MODEL": "NuclearTrackingInf:75",
                             "CALIBAN_NORM": "false"})
    assert old.MESMER_MODEL == "MultiplexSegmentation:7" and old.CALIBAN_MODEL == "NuclearTrackingInf:75"
    assert old.NORMALIZE_TRACKING is False
    both = Settings.from_env({"MESMER_MODEL": "A:1", "MULTIPLEX_MODEL": "B:2"})
    assert both.MESMER_MODEL == "A:1"  # the current name wins over the kiosk's old one


@pytest.mark.parametrize("env,message", [
    ({"MULTIPLEX_MODEL": "nope"}, "MULTIPLEX_MODEL (old name of MESMER_MODEL) must be a model NAME:VERSION"),
    ({"MESMER_COMPARTMENT": "cytoplasm"}, "MESMER_COMPARTMENT must be one of whole-cell, nuclear, both"),
    ({"POLARIS_THRESHOLD": "1.5"}, "POLARIS_THRESHOLD must be a number from 0 to 1"),
    ({"MAX_IMAGE_CHANNELS": "0"}, "MAX_IMAGE_CHANNELS must be at least 1"),
    ({"QUEUE": "x" * 100_000, "REDIS_PORT": "y" * 100_000}, "REDIS_PORT must be a whole number"),
])
def test_bad_kiosk_values_name_the_variable_in_one_short_line(env, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) < 200


class PluginConsumer(Consumer):
    WIDTH = Setting("PLUGIN_WIDTH", int, 3, "A plug-in's own number.", minimum=1)
    settings_spec = (WIDTH, Setting("PLUGIN_TOKEN", str, "", "A secret.", secret=True))


def test_plugin_settings_are_read_typed_validated_and_masked():
    base = Settings.from_env({"PLUGIN_WIDTH": "7", "PLUGIN_TOKEN": "tok-123456"})
    with pytest.raises(AttributeError):
        _ = base.PLUGIN_WIDTH  # not declared until the consumer's spec is read
    s = base.for_consumer(PluginConsumer)
    assert s.for_consumer(PluginConsumer) is s
    assert PluginConsumer.WIDTH.of(s) == 7 and s.PLUGIN_WIDTH == 7
    assert s.public()["PLUGIN_TOKEN"] == "***" and "tok-123456" in s.secret_values()
    assert s.replace(PLUGIN_WIDTH=9).PLUGIN_WIDTH == 9 and s.QUEUE == base.QUEUE
    with pytest.raises(ConfigError, match="PLUGIN_WIDTH must be at least 1"):
        Settings.from_env({"PLUGIN_WIDTH": "0"}).for_consumer(PluginConsumer)
    assert "PLUGIN_WIDTH" in markdown_table({"plugin": PluginConsumer.settings_spec})


def test_settings_are_immutable_and_compare_by_value():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.QUEUE = "other"  # type: ignore[misc]
    assert s == Settings.from_env({}) and hash(s) == hash(Settings.from_env({}))
    assert s.replace(QUEUE="other") != s
    with pytest.raises(ConfigError, match="unknown setting"):
        s.replace(NOT_A_SETTING=1)


def test_a_plugin_cannot_redeclare_a_core_setting():
    class Clashing(Consumer):
        settings_spec = (Setting("QUEUE", str, "other", "Not the core QUEUE."),)

    with pytest.raises(ConfigError, match="Clashing redeclares the core setting QUEUE"):
        Settings.from_env({}).for_consumer(Clashing)
