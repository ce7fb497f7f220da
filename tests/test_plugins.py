"""Method packages plug in through instseg_d2.plugins."""

import sys

import pytest

from instseg_d2 import plugins


@pytest.fixture
def fake_pkg(tmp_path, monkeypatch):
    def make(name, body):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
        registered = plugins.method_packages
        monkeypatch.setattr(
            plugins, "method_packages", lambda: registered() + [(name, "add_fake_config")]
        )
        monkeypatch.delitem(plugins._loaded, name, raising=False)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]
        plugins._loaded.pop(name, None)


def test_every_method_package_is_registered():
    """setup.py registers the eight method packages under the entry-point group; the core's
    own models come first."""
    packages = [pkg for pkg, _ in plugins.method_packages()]
    assert packages[0] == "instseg_d2.modeling"
    assert sorted(packages[1:]) == sorted(
        ["condinst_d2", "blendmask_d2", "solo_d2", "masklab_d2", "semiconv_d2", "sparseinst_d2",
         "transfiner_d2", "dvis_d2"]
    )  # fmt: skip


def test_no_registered_package_is_an_error(monkeypatch):
    monkeypatch.setattr(plugins, "entry_points", lambda **kw: {} if not kw else [])
    with pytest.raises(RuntimeError, match="instseg_d2.methods.*pip install -e"):
        plugins.method_packages()


def test_package_config_and_class_keys_applied(fake_pkg, tiny_shapes):
    fake_pkg(
        "fake_good_d2",
        "from detectron2.config import CfgNode as CN\n"
        "NUM_CLASSES_KEYS = ('MODEL.FAKE.NUM_CLASSES',)\n"
        "def add_fake_config(cfg):\n"
        "    cfg.MODEL.FAKE = CN()\n"
        "    cfg.MODEL.FAKE.NUM_CLASSES = 80  # K, default 80\n",
    )
    from instseg_d2.engine import build_config

    assert "fake_good_d2" in plugins.method_package_names()
    cfg = build_config(opts=["DATASETS.TRAIN", "('shapes_tiny_train',)", "DATASETS.TEST", "()"])
    assert cfg.MODEL.FAKE.NUM_CLASSES == 5  # set from the dataset like every head


def test_broken_package_is_an_error_not_skipped(fake_pkg):
    fake_pkg("fake_broken_d2", "raise ImportError('half-written module')\n")
    with pytest.raises(ImportError, match="half-written"):
        plugins.load_method_packages()


def test_package_without_config_function(fake_pkg):
    fake_pkg("fake_nofn_d2", "x = 1\n")
    with pytest.raises(AttributeError, match="fake_nofn_d2.*add_fake_config"):
        plugins.get_full_cfg()


def test_config_function_returning_a_value_is_an_error(fake_pkg):
    fake_pkg("fake_returns_d2", "def add_fake_config(cfg):\n    return cfg\n")
    with pytest.raises(TypeError, match="fake_returns_d2.add_fake_config.*return None"):
        plugins.get_full_cfg()
