"""Warm starts from a classic reconstruction (TrainConfig.init, nir.warm), at small sizes."""

import json
from argparse import Namespace

import numpy as np
import pytest

from napari_nirmpi.classic import reconstruct
from napari_nirmpi.errors import NirmpiError
from napari_nirmpi.nir import TrainConfig, fit
from napari_nirmpi.nir.warm import classic_start, field_from_image
from napari_nirmpi.sample import sample
from napari_nirmpi.simulate import simulate_case


@pytest.fixture(scope="module")
def cone7():
    case = simulate_case("cone", grid=(7, 7, 7), scanner="openmpi", seed=1, noise="low")
    return case.problem(), case.ground_truth()


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_field_from_image_reproduces_the_image_in_data_units(cone7):
    p, gt = cone7
    cfg = TrainConfig.fast_tv(0.3)
    field = field_from_image(p, gt, cfg)
    native, _ = sample(field, p.grid.shape)          # the voxel centres the image was fitted at
    assert _rel_err(native, gt) < 0.05
    # a random-weights field of the same network is nowhere near the image
    flat, _ = sample(field_from_image(p, gt, cfg, steps=1), p.grid.shape)
    assert _rel_err(flat, gt) > 0.5
    # SIREN takes the same path
    siren, _ = sample(field_from_image(p, gt, TrainConfig(), steps=200), p.grid.shape)
    assert _rel_err(siren, gt) < 0.3


def test_field_from_image_refuses_bad_images(cone7):
    p, gt = cone7
    with pytest.raises(NirmpiError, match="shape"):
        field_from_image(p, gt[:-1], TrainConfig.fast())
    bad = gt.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(NirmpiError, match="NaN"):
        field_from_image(p, bad, TrainConfig.fast())


def test_training_starts_from_the_classic_image(cone7):
    p, gt = cone7
    S0, u0 = p.S.copy(), p.u.copy()
    tv = reconstruct(p, "pdhg", "tv", "auto").image
    # one step at a tiny lr: the result is the warm start itself, the network fitted to PDHG-TV
    cfg = TrainConfig.fast_tv(0.3, iterations=1, lr=1e-9)
    field, state = fit(p, cfg)
    native, _ = sample(field, p.grid.shape)
    direct, _ = sample(field_from_image(p, tv, cfg), p.grid.shape)
    assert _rel_err(native, direct) < 0.01 and _rel_err(native, tv) < 0.05
    assert field.config["init"] == "pdhg-tv"
    # the same config without the classic start is a random field, much further from the image
    cold, _ = fit(p, TrainConfig.fast_tv(0.3, iterations=1, lr=1e-9, init=None))
    assert _rel_err(sample(cold, p.grid.shape)[0], tv) > 2 * _rel_err(native, tv)
    # training from there lowers the data misfit
    losses = []
    fit(p, TrainConfig.fast_tv(0.3, iterations=40, log_every=1, init_steps=100),
        callback=lambda s: losses.append(s.loss))
    assert np.mean(losses[-5:]) < losses[0]
    assert np.array_equal(p.S, S0) and np.array_equal(p.u, u0)   # the problem is untouched


def test_classic_start_of_each_method(cone7):
    p, _ = cone7
    for init in ("fista-l1", "cgnr-l2"):
        cfg = TrainConfig.fast(init=init, init_steps=50)
        img, _ = sample(classic_start(p, cfg), p.grid.shape)
        ref = reconstruct(p, *init.split("-"), "auto").image
        assert np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.8, init


def test_init_setting_is_checked_and_stored():
    with pytest.raises(NirmpiError, match="init"):
        TrainConfig.fast(init="kaczmarz-l2").validate()
    with pytest.raises(NirmpiError, match="init_steps"):
        TrainConfig.fast(init="pdhg-tv", init_steps=0).validate()
    cfg = TrainConfig.fast_tv(0.2)
    assert (cfg.init, cfg.lr, cfg.iterations, cfg.val_fraction) == ("pdhg-tv", 1e-3, 600, 0.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig().init is None and TrainConfig.fast().init is None


def test_cli_init_option():
    from napari_nirmpi.cli import _nir_options, build_parser
    from napari_nirmpi.nir.config import INIT_METHODS

    a = build_parser().parse_args(["reconstruct", "--sm", "s", "--meas", "m", "--method", "nir", "--init", "none",
                                   "--output", "o.npy"])
    assert _nir_options(a)["init"] is None
    reco = next(act for act in build_parser()._subparsers._group_actions[0].choices["reconstruct"]._actions
                if act.dest == "init")
    assert tuple(reco.choices) == ("none",) + INIT_METHODS      # the CLI's list is the config's
    kw = _nir_options(Namespace(method="nir", init="fista-l1"))
    TrainConfig.fast(**kw).validate()
    assert kw == {"init": "fista-l1"}
    with pytest.raises(NirmpiError, match="--init applies to --method nir only"):
        _nir_options(Namespace(method="pdhg", init="pdhg-tv"))


def test_classic_start_refuses_bad_settings_before_solving(cone7, monkeypatch):
    import napari_nirmpi.classic as classic

    p, _ = cone7
    calls = []
    monkeypatch.setattr(classic, "reconstruct", lambda *a, **k: calls.append(a))
    with pytest.raises(NirmpiError, match="lr"):
        classic_start(p, TrainConfig.fast(init="pdhg-tv", lr=5.0))
    with pytest.raises(NirmpiError, match="init"):
        classic_start(p, TrainConfig.fast())
    assert calls == []            # no classic solve was started for a config that cannot run
