"""The study runner's bookkeeping: finished runs are not rerun, tables are mean ± sd."""

import json

import numpy as np
import pytest
from etils import epath

from fdt_jax.studies import runner


def result(name, group, seed, rsum):
  return {'name': name, 'group': group, 'seed': seed, 'final': {'test/rsum': rsum},
          'tokens': {'agreement': rsum / 1000}}


def test_summary_gives_mean_and_sample_sd_per_group():
  rows = runner.summarize([result('a0', 'A', 0, 200.0), result('a1', 'A', 1, 260.0),
                           result('b0', 'B', 0, 300.0)],
                          {'rsum': 'test/rsum', 'agreement': 'tokens/agreement'})
  a, b = rows
  assert a['group'] == 'A' and a['seeds'] == [0, 1]
  assert a['rsum']['mean'] == 230.0 and a['rsum']['sd'] == pytest.approx(np.std([200, 260], ddof=1))
  assert a['agreement']['mean'] == pytest.approx(0.23)
  assert b['rsum']['sd'] is None  # one seed: no spread
  table = runner.markdown_table(rows, ['rsum'])
  assert '| A | 0,1 | 230.0 ± 42.4 |' in table and '| B | 0 | 300.0 |' in table


def test_a_finished_run_is_read_back_not_rerun(tmp_path):
  results = epath.Path(tmp_path) / 'results'
  results.mkdir()
  (results / 'done.json').write_text(json.dumps(result('done', 'A', 0, 123.0)))
  # The config does not exist: running it would fail, so success means it was not run.
  run = runner.Run('done', 'A', 'configs/missing.py')
  assert runner.run_all([run], str(tmp_path / 'work'), str(results))[0]['final']['test/rsum'] == 123.0
  with pytest.raises(ValueError, match='share a name'):
    runner.run_all([run, run], str(tmp_path / 'work'), str(results))


def test_last_values_keep_the_final_value_of_each_key(tmp_path):
  path = epath.Path(tmp_path) / 'metrics.jsonl'
  path.write_text('\n'.join(json.dumps(r) for r in [
      {'step': 100, 'train/loss': 2.0}, {'step': 200, 'test/rsum': 50.0},
      {'step': 200, 'train/loss': 1.0}]))
  assert runner.last_values(path) == {'step': 200, 'train/loss': 1.0, 'test/rsum': 50.0}
  assert runner.train_curve(path, ('train/loss',)) == {'train/loss': [(100, 2.0), (200, 1.0)]}


def test_the_report_reads_back_its_own_tables_without_taking_them_for_runs(tmp_path):
  from fdt_jax.studies import fdt_vs_clip
  for r in (result('fdt_s0', 'FDT', 0, 300.0), result('fdt_s1', 'FDT', 1, 310.0),
            result('clip_s0', 'CLIP', 0, 305.0)):
    r['curve'] = {'train/loss': [(100, 2.0), (200, 1.0)]}
    (tmp_path / f'{r["name"]}.json').write_text(json.dumps(r))
  first = fdt_vs_clip.report(str(tmp_path))
  assert fdt_vs_clip.report(str(tmp_path)) == first  # seeds.json now exists; same table
  assert '| FDT | 0,1 | 305.00 ± 7.07 |' in first and '| CLIP | 0 | 305.00 |' in first
  assert (tmp_path / 'seeds_curves.png').exists() and not (tmp_path / 'sweep.json').exists()


def test_tokens_vs_concepts_tabulates_both_purities_with_their_chance(tmp_path):
  from fdt_jax.studies import tokens_vs_concepts as study
  fdt_dir, out = tmp_path / 'fdt', tmp_path / 'out'
  fdt_dir.mkdir()
  out.mkdir()
  for seed, purity in ((0, 0.2), (1, 0.4)):
    r = result(f'fdt1000_s{seed}', 'FDT T=1000 (authors)', seed, 300.0)
    r['tokens'].update({'purity_image_colour': purity, 'purity_image_colour_chance': 0.1,
                        'purity_text_colour': purity / 2, 'purity_text_colour_chance': 0.1})
    (fdt_dir / f'fdt1000_s{seed}.json').write_text(json.dumps(r))
  concepts = {'purity_colour': 0.9, 'purity_colour_chance': 0.15, 'tag_accuracy': 50.0,
              'tag_accuracy_other_image': 30.0}
  concepts.update({f'tag_accuracy_{k}{s}': 10.0 for k in study.KINDS for s in ('', '_other_image')})
  (out / 'mvptr_s1.json').write_text(json.dumps(
      {'name': 'mvptr_s1', 'seed': 1, 'test/rsum': 280.0, 'study_test/rsum': 281.0,
       'concepts': concepts, 'pointing': {'pointing_accuracy': 9.5, 'chance': 11.75,
                                          'best_in_any_object': 17.0,
                                          'best_in_any_object_chance': 20.25,
                                          'top_patch_share': 12.0}}))
  table = study.report(str(out), str(fdt_dir))
  row = next(line for line in table.splitlines() if line.startswith('| colour |'))
  sd = np.std([0.2, 0.4], ddof=1)
  assert row == (f'| colour | 0.300 ± {sd:.3f} (0.100 ± 0.000) | 0.150 ± {sd / 2:.3f} '
                 f'(0.100 ± 0.000) |  |  | 0.900 (0.150) |  |')  # no MVPTR+FDT run
  assert '| all | 50.000 | 30.000 |' in table
  assert '| 1 | 9.5 (11.8) | 17.0 (20.2) | 12.0 |' in table
  assert 'mvptr_s1 test rsum 280.00 (the study recorded 281.00)' in table
  assert (out / 'tables.md').read_text() == table + '\n'
