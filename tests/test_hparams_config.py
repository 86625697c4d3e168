"""Config: presets, override parsing, type and cross-field validation, YAML round trip."""

import re

import pytest

import hparams_config
from hparams_config import HparamsError


def test_presets_default_to_vfpn_and_reference_table():
    c = hparams_config.get_detection_config("efficientdet-d0")
    assert c.fpn_name == "vfpn"
    assert (c.backbone_name, c.image_size, c.fpn_num_filters, c.fpn_cell_repeats,
            c.box_class_repeats) == ("efficientnet-b0", 512, 64, 3, 3)
    d7 = hparams_config.get_detection_config("efficientdet-d7")
    assert (d7.backbone_name, d7.image_size, d7.anchor_scale) == ("efficientnet-b6", 1536, 5.0)
    assert d7.fpn_weight_method == "sum"
    # the EfficientDet release's defaults
    assert (c.alpha, c.gamma, c.delta, c.box_loss_weight) == (0.25, 1.5, 0.1, 50.0)
    assert (c.learning_rate, c.moving_average_decay, c.weight_decay) == (0.08, 0.9998, 4e-5)


def test_string_overrides_parse_types_and_nested_keys():
    c = hparams_config.get_detection_config(
        "efficientdet-d0",
        "num_classes=20,,learning_rate=1,input_rand_hflip=false,image_size=1920x1280,"
        "nms_configs.method=gaussian,aspect_ratios=[(1.0,1.0),(2.0,0.5)],ckpt_var_scope=effnet,")
    assert c.num_classes == 20
    assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)
    assert c.input_rand_hflip is False
    assert c.image_size == "1920x1280"
    assert hparams_config.image_hw(c) == (1280, 1920)
    assert c.nms_configs.method == "gaussian"
    assert c.nms_configs.iou_thresh == 0.5  # nested override merges, it does not replace
    assert [list(a) for a in c.aspect_ratios] == [[1.0, 1.0], [2.0, 0.5]]
    assert c.ckpt_var_scope == "effnet"  # None default accepts any type


def test_precision_spellings():
    assert hparams_config.get_detection_config(
        "efficientdet-d0", "precision=mixed-float16").precision == "mixed_float16"
    assert hparams_config.get_detection_config(
        "efficientdet-d0", "precision=mixed_float16").precision == "mixed_float16"
    assert hparams_config.get_detection_config(
        "efficientdet-d0", {"precision": "mixed_bfloat16"}).precision == "mixed_bfloat16"
    with pytest.raises(HparamsError, match="precision.*valid values"):
        hparams_config.get_detection_config("efficientdet-d0", "precision=fp8")


def test_unknown_key_names_the_closest_valid_keys():
    with pytest.raises(HparamsError) as e:
        hparams_config.get_detection_config("efficientdet-d0", "num_clases=3")
    assert "unknown hparam key 'num_clases'" in str(e.value)
    assert "'num_classes'" in str(e.value)
    with pytest.raises(HparamsError, match="nms_configs.methd.*nms_configs.method"):
        hparams_config.get_detection_config("efficientdet-d0", "nms_configs.methd=hard")


def test_wrong_type_is_an_error():
    with pytest.raises(HparamsError, match="'fpn_num_filters' expects int.*'abc'"):
        hparams_config.get_detection_config("efficientdet-d0", "fpn_num_filters=abc")
    with pytest.raises(HparamsError, match="'num_classes' expects int.*2.5"):
        hparams_config.get_detection_config("efficientdet-d0", {"num_classes": 2.5})
    with pytest.raises(HparamsError, match="'input_rand_hflip' expects bool"):
        hparams_config.get_detection_config("efficientdet-d0", {"input_rand_hflip": 1})


def test_bad_piece_and_bad_value_type():
    with pytest.raises(HparamsError, match="key=value"):
        hparams_config.get_detection_config("efficientdet-d0", "num_classes=3,oops")
    with pytest.raises(HparamsError, match="must be a string"):
        hparams_config.get_detection_config("efficientdet-d0", 42)


def test_cross_field_checks():
    with pytest.raises(HparamsError, match="not divisible by 2\\*\\*max_level = 128"):
        hparams_config.get_detection_config("efficientdet-d0", "image_size=500")
    with pytest.raises(HparamsError, match="1280x1000.*not divisible"):
        hparams_config.get_detection_config("efficientdet-d0", "image_size=1000x1280")
    with pytest.raises(HparamsError, match="min_level <= max_level"):
        hparams_config.get_detection_config("efficientdet-d0", "min_level=5,max_level=4")
    with pytest.raises(HparamsError, match="num_classes' must be >= 1"):
        hparams_config.get_detection_config("efficientdet-d0", "num_classes=0")
    with pytest.raises(HparamsError, match="image_size"):
        hparams_config.get_detection_config("efficientdet-d0", "image_size=big")
    with pytest.raises(HparamsError, match="unknown model_name 'efficientdet-d9'"):
        hparams_config.get_detection_config("efficientdet-d9")
    with pytest.raises(HparamsError, match="'vfpn_branch_start' is a fraction .* got 1.5"):
        hparams_config.get_detection_config("efficientdet-d0", "vfpn_branch_start=1.5")
    with pytest.raises(HparamsError, match="'vfpn_branch_warmup' is a fraction .* got -0.1"):
        hparams_config.get_detection_config("efficientdet-d0", "vfpn_branch_warmup=-0.1")
    with pytest.raises(HparamsError, match="'vfpn_branch_weight_decay_scale' must be >= 0"):
        hparams_config.get_detection_config("efficientdet-d0",
                                            "vfpn_branch_weight_decay_scale=-1")


def test_yaml_layering_and_round_trip(tmp_path):
    voc = tmp_path / "voc_config.yaml"
    voc.write_text("num_classes: 20\nmoving_average_decay: 0\nnms_configs:\n  sigma: 0.3\n")
    c = hparams_config.get_detection_config("efficientdet-d0", str(voc))
    assert (c.num_classes, c.moving_average_decay, c.nms_configs.sigma) == (20, 0.0, 0.3)
    # files and pairs mix, applied left to right
    c2 = hparams_config.get_detection_config("efficientdet-d0", f"{voc},num_classes=5")
    assert (c2.num_classes, c2.moving_average_decay) == (5, 0.0)
    out = tmp_path / "config.yaml"
    c2.save_to_yaml(str(out))
    back = hparams_config.Config.load_from_yaml(str(out))
    assert back.as_dict() == hparams_config.Config(
        hparams_config.to_yamlable(c2.as_dict())).as_dict()
    again = hparams_config.get_detection_config("efficientdet-d0", str(out))
    assert again.num_classes == 5 and again.nms_configs.sigma == 0.3


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(HparamsError, match="missing.yaml' does not exist"):
        hparams_config.get_detection_config("efficientdet-d0", str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(HparamsError, match="bad.yaml' must hold a mapping"):
        hparams_config.get_detection_config("efficientdet-d0", str(bad))
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("num_classes: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(HparamsError, match="not valid YAML"):
        hparams_config.get_detection_config("efficientdet-d0", str(unsafe))


# -------------------------------------------------------------------------------------------------
# The range and type table
# -------------------------------------------------------------------------------------------------
def _flat(config, prefix=""):
    for key in config.keys():
        value = config[key]
        if isinstance(value, hparams_config.Config):
            yield from _flat(value, prefix + key + ".")
        else:
            yield prefix + key, value


def test_every_number_has_a_range_and_every_preset_lies_inside():
    numbers = {k for k, v in _flat(hparams_config.default_detection_configs())
               if isinstance(v, (int, float)) and not isinstance(v, bool)} | {"survival_prob"}
    numbers -= {"image_size"}  # its own rule: divisible by 2**max_level, each side <= 4096
    assert numbers <= set(hparams_config._RANGES), numbers - set(hparams_config._RANGES)
    for name in hparams_config.efficientdet_model_param_dict:
        hparams_config.validate(hparams_config.get_efficientdet_config(name))
    # every None default declares what it takes
    nones = {k for k, v in _flat(hparams_config.default_detection_configs()) if v is None}
    assert nones == set(hparams_config._OPTIONAL_TYPES)


def test_choices_are_the_registries():
    import vfpn
    from backbone import efficientnet

    assert set(hparams_config._CHOICES["fpn_name"]) == set(vfpn.FPN_BUILDERS)
    assert set(hparams_config._CHOICES["backbone_name"]) == set(efficientnet._MODEL_PARAMS)
    assert hparams_config._CHOICES["name"] == tuple(hparams_config.efficientdet_model_param_dict)


@pytest.mark.parametrize("override,message", [
    ("learning_rate=-0.5", r"^hparam 'learning_rate' must be > 0, got -0.5\.$"),
    ("learning_rate=0", r"'learning_rate' must be > 0, got 0"),
    ("momentum=-5", r"'momentum' must be >= 0, got -5.0 \(allowed: \[0, 1\)\)"),
    ("moving_average_decay=1.5", r"'moving_average_decay' is a decay .*must be < 1, got 1.5 "
                                 r"\(allowed: \[0, 1\)\)"),
    ("moving_average_decay=1", r"'moving_average_decay' .*must be < 1, got 1.0"),
    ("batch_norm_momentum=1.0", r"'batch_norm_momentum' .*must be < 1"),
    ("nms_configs.iou_thresh=5", r"'nms_configs.iou_thresh' is an IoU: must be <= 1, got 5.0"),
    ("nms_configs.score_thresh=-0.1", r"'nms_configs.score_thresh' is a score: must be >= 0"),
    ("nms_configs.max_output_size=0", r"'nms_configs.max_output_size' .*must be >= 1, got 0"),
    ("nms_configs.sigma=0", r"'nms_configs.sigma' must be > 0"),
    ("nms_configs.method=soft", r"'nms_configs.method' got 'soft'; valid values: 'hard', "
                                r"'gaussian'"),
    ("survival_prob=1.5", r"'survival_prob' is a probability: must be <= 1, got 1.5"),
    ("survival_prob=0", r"'survival_prob' is a probability: must be > 0"),
    ("alpha=2", r"'alpha' .*must be <= 1, got 2.0"),
    ("gamma=-1", r"'gamma' must be >= 0"),
    ("train_scale_min=0", r"'train_scale_min' .*must be > 0, got 0.0"),
    ("train_scale_max=100", r"'train_scale_max' .*must be <= 10, got 100.0"),
    ("num_classes=20000", r"'num_classes' must be <= 10000, got 20000"),
    ("min_level=2", r"'min_level' .*must be >= 3, got 2"),
    ("fpn_num_filters=0", r"'fpn_num_filters' must be >= 1, got 0"),
    ("bn_recalibration_images=5000", r"'bn_recalibration_images' .*must be <= 1024"),
    ("mean_rgb=[0.5,300,0.4]", r"'mean_rgb' .*must be <= 1, got 300 .*in mean_rgb="),
    ("stddev_rgb=[0.2,0.0,0.2]", r"'stddev_rgb' .*must be > 0"),
    ("mean_rgb=[0.5,0.5]", r"'mean_rgb' needs 3 values \(R, G, B\), got \[0.5, 0.5\]"),
    ("aspect_ratios=[(1.0,-1.0)]", r"'aspect_ratios' .*must be > 0, got -1.0"),
    ("image_size=12800", r"'image_size' is 12800x12800 \(WxH\); each side must be <= 4096"),
    ("image_size=4224x128", r"each side must be <= 4096"),
    ("fpn_name=bofpn", r"'fpn_name' got 'bofpn'; valid values: 'vfpn', 'bifpn', 'bifpn_sum'"),
    ("backbone_name=resnet50", r"'backbone_name' got 'resnet50'"),
])
def test_out_of_range_is_one_line_naming_key_value_and_range(override, message):
    with pytest.raises(HparamsError) as e:
        hparams_config.get_detection_config("efficientdet-d0", override)
    assert re.search(message, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


def test_range_ends_are_as_declared():
    ok = ["moving_average_decay=0", "nms_configs.iou_thresh=1", "nms_configs.iou_thresh=0",
          "survival_prob=1", "alpha=0", "clip_gradients_norm=0", "vfpn_refine_convs=0",
          "nms_configs.max_nms_inputs=0", "image_size=4096", "num_classes=10000",
          "learning_rate=1e30"]
    for override in ok:
        hparams_config.get_detection_config("efficientdet-d0", override)


def test_none_default_keys_take_their_declared_types():
    c = hparams_config.get_detection_config("efficientdet-d0", "survival_prob=1")
    assert c.survival_prob == 1.0 and isinstance(c.survival_prob, float)
    assert hparams_config.get_detection_config(
        "efficientdet-d0", "survival_prob=0.8,survival_prob=None").survival_prob is None
    for override, message in [
            ("survival_prob=abc", "'survival_prob' expects float or None, got str 'abc'"),
            ("ckpt_var_scope=3", "'ckpt_var_scope' expects str or None, got int 3"),
            ("label_map=5", "'label_map' expects str or dict or None, got int 5"),
            ("learning_rate=None", "'learning_rate' expects float (default 0.08), got NoneType"),
            ("nms_configs=None", "'nms_configs' expects a mapping, got NoneType None"),
            ("var_exclude_expr='(('", "'var_exclude_expr' is not a regular expression")]:
        with pytest.raises(HparamsError, match=re.escape(message)):
            hparams_config.get_detection_config("efficientdet-d0", override)


@pytest.mark.parametrize("override,message", [
    ("train_scale_min=2.0,train_scale_max=0.5", "train_scale_min <= train_scale_max"),
    ("first_lr_drop_epoch=300.0,second_lr_drop_epoch=100.0",
     "first_lr_drop_epoch <= second_lr_drop_epoch"),
    ("vfpn_branch_start=0.6,vfpn_branch_warmup=0.6",
     "vfpn_branch_start + vfpn_branch_warmup <= 1"),
])
def test_cross_field_rules_name_both_values(override, message):
    with pytest.raises(HparamsError) as e:
        hparams_config.get_detection_config("efficientdet-d0", override)
    assert message in str(e.value)
    for piece in override.split(","):
        key, value = piece.split("=")
        assert f"{key}={float(value)!r}" in str(e.value)


def test_a_config_file_names_its_version(tmp_path):
    """save_to_yaml writes `version: 1` first; the file reads back as a config and as an
    --hparams file, and a file of a version this code does not know is refused, naming it."""
    config = hparams_config.get_detection_config("efficientdet-d0", "num_classes=5")
    path = tmp_path / "config.yaml"
    config.save_to_yaml(str(path))
    assert path.read_text() == f"version: 1\n{config}"
    assert "version" not in hparams_config.Config.load_from_yaml(str(path))
    assert hparams_config.get_detection_config("efficientdet-d0", str(path)) == config
    path.write_text("version: 2\nnum_classes: 5\n")
    with pytest.raises(HparamsError, match=rf"^'{re.escape(str(path))}': key 'version' is 2, "
                                           r"a config file layout this code does not read"):
        hparams_config.get_detection_config("efficientdet-d0", str(path))
