"""Config: presets, override parsing, type and cross-field validation, YAML round trip."""

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








