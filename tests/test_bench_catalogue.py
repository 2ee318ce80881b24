"""The experiment catalogue (bench/catalogue.yaml): the committed one works
with the library, and a broken one is one error naming the key."""
import copy
import os

import pytest
import yaml

from conftest import ROOT
from bench.catalogue import PATH, CatalogueError, catalogue, load


def _rows(profile):
    return list(profile.methods) + list(profile.sweep) + \
        list(profile.on_request) + [profile.step_method]


@pytest.mark.parametrize('name', sorted(catalogue().profiles))
def test_every_row_of_every_profile_is_a_config_the_library_accepts(name):
    """Each row a profile can train resolves through load_config (every -o
    key known) and, when it distils, through distill_settings (every value
    valid): a typo in a row fails here, not hours into a run."""
    from detdistill.config import load_config
    from detdistill.distill.settings import distill_settings
    from bench.runs import overrides, profile_opts
    profile = catalogue().profiles[name]
    for row in _rows(profile):
        method = catalogue().methods[row]
        cfg = load_config(os.path.join(ROOT, profile.config(method.role)),
                          profile_opts(profile) + overrides(row, profile))
        if method.distills:  # l2_auto_<feature loss>: two losses
            assert len(distill_settings(cfg).losses) == (
                2 if row.startswith('l2_auto_') else 1), row


def test_the_profiles_files_exist():
    """Configs, the data command's script, and the committed teacher a
    `teacher_from` profile evaluates (the main job's)."""
    from bench.runs import teacher_weights
    cat = catalogue()
    for p in cat.profiles.values():
        for path in (p.student, p.teacher, p.make_data[0]):
            assert os.path.isfile(os.path.join(ROOT, path)), (p.name, path)
    quick = cat.profiles['quick']
    assert quick.teacher_from == cat.profiles['converged'].out
    weights = teacher_weights('unused', quick)
    assert weights == os.path.join('results', 'converged', 'runs',
                                   'teacher_s0', 'yolov3_r34_converged',
                                   'model_final')
    for p in cat.profiles.values():
        if p.teacher_from:
            assert os.path.isfile(os.path.join(
                ROOT, teacher_weights('unused', p) + '.pdparams')), p.name
            assert os.path.isfile(os.path.join(
                ROOT, p.teacher_from, 'runs', cat.teacher + '_s0',
                'summary.json')), p.name


def test_rows_read_their_split_and_compare_with_their_baseline():
    cat = catalogue()
    assert cat.teacher == 'teacher'
    assert cat.methods['l2'].baseline == 'baseline'
    assert cat.methods['l2_half_unlabeled_ub4'].baseline == 'baseline_half'
    assert {m.name for m in cat.methods.values() if m.split == 'half'} == {
        'baseline_half', 'l2_half', 'l2_half_unlabeled',
        'l2_half_unlabeled_uw0.3', 'l2_half_unlabeled_uw3',
        'l2_half_unlabeled_ub4'}
    assert cat.methods['baseline_half'].kind == 'train'
    assert cat.methods['teacher'].kind == 'teacher'
    assert cat.methods['l2_plain'].cost_scale == 1.5


def _broken(tmp_path, edit):
    with open(PATH) as f:
        raw = yaml.safe_load(f)
    raw = copy.deepcopy(raw)
    edit(raw)
    path = tmp_path / 'catalogue.yaml'
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(CatalogueError) as e:
        load(str(path))
    return str(e.value).replace(str(path) + ': ', '')


def test_a_broken_catalogue_is_one_error_naming_the_key(tmp_path):
    def typo(raw):
        raw['profiles']['demo']['budget_mins'] = 40
    assert _broken(tmp_path, typo) == (
        "unknown key 'profiles.demo.budget_mins' (did you mean "
        "'budget_min'?)")

    def unknown_row(raw):
        raw['profiles']['converged']['sweep'].append('l2_w20')
    assert _broken(tmp_path, unknown_row) == (
        "profiles.converged.sweep: no row 'l2_w20' (did you mean "
        "'l2_w10'?)")

    def unknown_baseline(raw):
        raw['methods']['l2_half']['baseline'] = 'baseline_halves'
    assert _broken(tmp_path, unknown_baseline) == (
        "methods.l2_half.baseline: no row 'baseline_halves' (did you mean "
        "'baseline_half'?)")

    def bad_type(raw):
        raw['profiles']['quick']['cost']['teacher'] = 'cheap'
    assert _broken(tmp_path, bad_type) == (
        "profiles.quick.cost.teacher: expected a number > 0, got 'cheap'")

    def bad_tool(raw):
        raw['methods']['kl']['tool'] = 'distil'
    assert _broken(tmp_path, bad_tool) == (
        "methods.kl.tool: expected train or distill, got 'distil'")

    def missing_cost(raw):
        del raw['profiles']['gfl_demo']['cost']['distill']
    assert _broken(tmp_path, missing_cost) == (
        "profiles.gfl_demo.cost: 'distill' is missing")

    def split_without_writer(raw):
        raw['splits']['quarter'] = {'note': 'a quarter'}
    assert _broken(tmp_path, split_without_writer) == (
        "splits: no writer in bench/splits.py of a split 'quarter'")

    def unknown_split(raw):
        raw['methods']['l2_half']['split'] = 'quarter'
    assert _broken(tmp_path, unknown_split) == (
        "methods.l2_half.split: no split 'quarter'")

    def pair_of_one(raw):
        raw['profiles']['converged']['targets']['same'].append(['l2'])
    assert _broken(tmp_path, pair_of_one).startswith(
        'profiles.converged.targets.same: expected a list of [row, row] '
        'pairs')

    def sweep_of_a_train_row(raw):
        raw['profiles']['converged_b']['sweep'].append('baseline_half')
    assert _broken(tmp_path, sweep_of_a_train_row) == (
        'profiles.converged_b.sweep: baseline_half does not distill')

    def step_method_trains(raw):
        raw['profiles']['gfl_demo']['step_method'] = 'baseline'
    assert _broken(tmp_path, step_method_trains) == (
        'profiles.gfl_demo.step_method: baseline does not distill')
