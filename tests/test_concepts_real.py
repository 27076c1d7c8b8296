"""MVPTR's concepts for real data: the phrase extractor on hand-read captions, the vocabulary
a conversion counts, and the concept fields of training batches read from converted shards."""

import pytest

from fdt_jax.data import phrases

BUS = 'A man riding a red double-decker bus next to two small dogs on the street.'


@pytest.mark.parametrize('caption, expected', [
    (BUS, ['man', 'bus', 'red bus', 'double-decker bus', 'dog', 'small dog', 'street',
           'man riding bus', 'bus next to dog', 'dog on street']),
    ('Two women are sitting on a bench in the park.',  # 'are' left out of the relation
     ['woman', 'bench', 'park', 'woman sitting on bench', 'bench in park']),
    ('people are walking down a busy city street',  # a noun modifier ('city') is dropped
     ['person', 'street', 'busy street', 'person walking down street']),
    ("The dog sits on the man's old sofa",  # the possessed thing is the object
     ['dog', 'man', 'sofa', 'old sofa', 'dog sits on sofa']),
    ("A man's dog doesn't sit on the mat.",  # a negated relation is not one
     ['man', 'dog', 'mat']),
    ('A cat with no tail sleeping under a blue car',  # the nearest noun phrase is the subject
     ['cat', 'tail', 'car', 'blue car', 'tail sleeping under car']),
    ('Buses parked near many tall buildings',  # a quantifier is no attribute
     ['bus', 'building', 'tall building', 'bus parked near building']),
    ('a cat and a dog on a sofa', ['cat', 'dog', 'sofa', 'dog on sofa']),  # the nearest only
    ('A dog with a ball. It is chasing a cat.', ['dog', 'ball', 'cat', 'dog with ball']),  # no coreference
    ('The bus is red.', ['bus']),  # an adjective after a verb is no attribute
    ('', []), ('!!! ...', []), ('it is there', []),
])
def test_the_tuples_of_hand_read_captions(caption, expected):
  assert phrases.caption_tuples(caption) == expected


def test_each_tuple_spans_the_words_that_state_it():
  stated = {name: BUS[start:end] for name, (start, end) in phrases.caption_tuple_spans(BUS).items()}
  assert stated == {
      'man': 'man', 'bus': 'bus', 'red bus': 'red double-decker bus',
      'double-decker bus': 'double-decker bus', 'dog': 'dogs', 'small dog': 'small dogs',
      'street': 'street', 'man riding bus': 'man riding a red double-decker bus',
      'bus next to dog': 'red double-decker bus next to two small dogs',
      'dog on street': 'two small dogs on the street'}
  curly = 'The dog sits on the man\u2019s old sofa'  # spans in the caption as written
  assert {n: curly[s:e] for n, (s, e) in phrases.caption_tuple_spans(curly).items()}['dog sits on sofa'] \
      == 'dog sits on the man\u2019s old sofa'


def test_the_extractor_names_its_version():
  assert phrases.extractor_name().startswith(f'fdt_jax.data.phrases v{phrases.RULES_VERSION} (textblob 0.20.1')


# --- A conversion with concepts, and training batches read from it ---------------

# Their tuples (as the extractor gives them, checked above in kind): 'man', 'bus', 'red bus',
# 'man riding bus' | 'bus', 'red bus', 'street', 'bus on street' | 'dog', 'street',
# 'dog on street' | none | 'dog'.
CAPTIONS = ['A man riding a red bus.', 'a red bus on the street', 'two dogs on the street', '!!!',
            'A dog.']
A_TAR, B_TAR = CAPTIONS, [CAPTIONS[1], CAPTIONS[2], CAPTIONS[4]]
# Captions stating each tuple over both tars, those stated by >= 2: by count, then name.
VOCABULARY = [('dog', 4), ('street', 4), ('bus', 3), ('red bus', 3), ('bus on street', 2),
              ('dog on street', 2)]


def write_tar(path, captions):
  from test_convert import encode, picture, tar_bytes
  members = []
  for i, caption in enumerate(captions):
    members += [(f'{i:03d}.jpg', encode(picture(i), 'JPEG')), (f'{i:03d}.txt', caption.encode())]
  path.write_bytes(tar_bytes(members))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  from fdt_jax.data import convert
  root = tmp_path_factory.mktemp('concepts')
  write_tar(root / 'a.tar', A_TAR)
  write_tar(root / 'b.tar', B_TAR)
  out = root / 'out'
  stats = convert.convert(str(root / '{a,b}.tar'), str(out), concepts=True, concept_min_count=2,
                          workers=1, log=lambda line: None)
  convert.write_tokenizer(str(out), vocab_size=40)
  return root, out, stats


def vocabulary_of(out):
  from fdt_jax.data.converted_concepts import read_vocabulary
  vocabulary = read_vocabulary(str(out))
  return list(zip(vocabulary['names'], vocabulary['counts'])), vocabulary


def test_the_vocabulary_keeps_what_min_count_captions_state_most_frequent_first():
  from fdt_jax.data.converted_concepts import build_vocabulary
  counts = {'dog': 5, 'cat': 5, 'red bus': 3, 'bus': 2, 'man riding bus': 1}
  assert build_vocabulary(counts, 3) == [('cat', 5), ('dog', 5), ('red bus', 3)]
  assert build_vocabulary(dict(reversed(counts.items())), 3) == [('cat', 5), ('dog', 5), ('red bus', 3)]
  assert build_vocabulary(counts, 6) == []


def test_a_conversion_counts_every_caption_and_writes_the_vocabulary(converted):
  from fdt_jax.data.convert import conversion_stats
  _, out, stats = converted
  assert stats['records_written'] == 8 and stats['captions_without_concepts'] == 1  # '!!!' is kept
  assert conversion_stats(str(out))['splits']['train']['captions_without_concepts'] == 1
  names, vocabulary = vocabulary_of(out)
  assert names == VOCABULARY
  assert vocabulary['num_concepts'] == len(VOCABULARY) + 2 and vocabulary['min_count'] == 2
  assert vocabulary['captions'] == 8 and vocabulary['captions_without_concepts'] == 1
  assert vocabulary['distinct_tuples'] == 8 and vocabulary['extractor'] == phrases.extractor_name()


def test_the_vocabulary_is_the_same_whatever_the_shard_order_or_a_resume(converted, tmp_path):
  from fdt_jax.data import convert
  root, out, _ = converted
  quiet = dict(concepts=True, concept_min_count=2, workers=1, log=lambda line: None)
  convert.convert([str(root / 'b.tar'), str(root / 'a.tar')], str(tmp_path / 'swapped'), **quiet)
  assert vocabulary_of(tmp_path / 'swapped')[0] == VOCABULARY
  # b.tar missing at first (its shard is retried by the rerun), then there.
  write_tar(tmp_path / 'a.tar', A_TAR)
  convert.convert(str(tmp_path / '{a,b}.tar'), str(tmp_path / 'resumed'), **quiet)
  assert vocabulary_of(tmp_path / 'resumed')[0] == [('bus', 2), ('dog', 2), ('red bus', 2), ('street', 2)]
  write_tar(tmp_path / 'b.tar', B_TAR)
  convert.convert(str(tmp_path / '{a,b}.tar'), str(tmp_path / 'resumed'), **quiet)
  assert vocabulary_of(tmp_path / 'resumed')[0] == VOCABULARY
  # Another threshold on a finished conversion rewrites the vocabulary only.
  convert.convert(str(tmp_path / '{a,b}.tar'), str(tmp_path / 'resumed'), **{**quiet, 'concept_min_count': 4})
  assert vocabulary_of(tmp_path / 'resumed')[0] == VOCABULARY[:2]


def test_the_tags_of_an_image_are_the_concepts_of_all_its_captions_in_order():
  import json
  from fdt_jax.data.converted_concepts import ConvertedConcepts, caption_concepts_field
  names = [name for name, _ in VOCABULARY]
  ids = {name: 2 + k for k, name in enumerate(names)}
  fields = ConvertedConcepts(ids)
  two = [CAPTIONS[1], CAPTIONS[2]]
  record = {'captions': [c.encode() for c in two], 'concepts': [caption_concepts_field(c).encode() for c in two]}
  got = fields(record, CAPTIONS[2])
  assert list(got['phrases']) == [ids['dog'], ids['street'], ids['dog on street'], 0, 0]
  assert list(got['tags'][:7]) == [ids[n] for n in ('bus', 'red bus', 'street', 'bus on street', 'dog',
                                                    'dog on street')] + [0]
  # Out of the vocabulary: dropped; more than MAX_TAGS: the first ones.
  many = {'captions': ['x'], 'concepts': [json.dumps([[f'c{i}', 0, 1] for i in range(30)] + [['zz', 0, 1]])]}
  got = ConvertedConcepts({f'c{i}': 2 + i for i in range(30)})(many, 'x')
  assert list(got['tags']) == list(range(2, 22)) and list(got['phrases']) == list(range(2, 7))


def test_training_batches_of_converted_data_carry_the_vocabularys_phrases_tags_and_spans(converted, shapes_dir):
  from conftest import micro_config
  from fdt_jax.data.concepts import MAX_PHRASES, MAX_TAGS
  from fdt_jax.data.sources import build_data
  from fdt_jax.models import model_config
  _, out, _ = converted
  config = micro_config(shapes_dir, **{'data.concepts': True, 'data.name': f'dir:{out}'})
  data = build_data(config, model_config(config.model))
  assert data.batch_fields == ('images', 'tokens', 'phrases', 'tags', 'phrase_spans')
  batch = next(data.train_iterator(process_index=0, process_count=1))
  ids = {name: 2 + k for k, (name, _) in enumerate(VOCABULARY)}
  encoded = {c: data.tokenizer.encode(c)[0] for c in CAPTIONS}
  seen = set()
  for tokens, phrase_ids, tags, spans in zip(batch['tokens'], batch['phrases'], batch['tags'],
                                             batch['phrase_spans']):
    caption = next(c for c, t in encoded.items() if (t == tokens).all())
    seen.add(caption)
    stated = [n for n in phrases.caption_tuples(caption) if n in ids]  # 'man...' is out
    expected = [ids[n] for n in stated]
    assert list(phrase_ids) == (expected + [0] * MAX_PHRASES)[:MAX_PHRASES], caption
    assert list(tags) == (expected + [0] * MAX_TAGS)[:MAX_TAGS]  # one caption per record
    char_spans = phrases.caption_tuple_spans(caption)
    for name, (start, end) in zip(stated, spans):
      said = caption[slice(*char_spans[name])]
      assert data.tokenizer.decode(tokens[start:end]).strip() == said, (caption, name)
    assert (spans[len(stated):] == 0).all()
  assert len(seen) >= 3


def test_concept_errors_say_what_to_do_in_one_line(converted, shapes_dir, tmp_path):
  from conftest import micro_config, micro_family_config
  from fdt_jax.data import convert
  from fdt_jax.data.sources import build_data
  from fdt_jax.models import model_config
  root, out, _ = converted
  mvptr = lambda **o: micro_family_config(shapes_dir, 'mvptr', dict(visual_layers=1, fusion_layers=1), **o)
  config = mvptr(**{'data.name': f'dir:{out}'})  # num_concepts: the shapes data's 212
  with pytest.raises(ValueError, match=r'^config.model.num_concepts = 212 but .* has 6 concepts '
                                       r'.*: set --config.model.num_concepts=8 '):
    build_data(config, model_config(config.model))
  config = mvptr()
  config.model.num_concepts = 8  # converted data's number on the shapes data
  with pytest.raises(ValueError, match=r'shapes data has 210 concepts: set --config.model.num_concepts=212 '):
    build_data(config, model_config(config.model))
  convert.convert(str(root / 'a.tar'), str(tmp_path / 'plain'), workers=1, log=lambda line: None)
  config = micro_config(shapes_dir, **{'data.concepts': True, 'data.name': f'dir:{tmp_path / "plain"}'})
  with pytest.raises(ValueError, match=r'has no concepts .*: re-convert its train split with '
                                       r'python -m fdt_jax.data.convert --concepts'):
    build_data(config, model_config(config.model))
  with pytest.raises(convert.ConversionError, match=r"holds split 'train' converted without --concepts"):
    convert.convert(str(root / 'b.tar'), str(tmp_path / 'plain'), split='val', concepts=True, workers=1)
  with pytest.raises(convert.ConversionError, match=r"holds split 'train' converted with --concepts"):
    convert.convert(str(root / 'b.tar'), str(out), split='val', workers=1)


@pytest.mark.slow  # compiles the MVPTR step: ~30 s on 2 busy cores
def test_mvptr_trains_on_converted_data_with_concepts(converted, shapes_dir, tmp_path):
  import numpy as np
  from conftest import micro_family_config
  from fdt_jax.run import read_jsonl
  from fdt_jax.train import loop
  _, out, _ = converted
  config = micro_family_config(shapes_dir, 'mvptr', dict(visual_layers=1, fusion_layers=1),
                               total_steps=2, log_every_steps=1, checkpoint_every_steps=2, batch_size=8)
  config.data.name = f'dir:{out}'
  config.model.num_concepts = len(VOCABULARY) + 2
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  records = read_jsonl(tmp_path / 'run' / 'metrics.jsonl')
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert records[0]['data/captions_without_concepts'] == 1


def test_the_command_line_converts_with_concepts_and_refuses_a_bad_count_in_one_line(converted, tmp_path):
  import subprocess
  import sys
  root, _, _ = converted
  command = [sys.executable, '-m', 'fdt_jax.data.convert', f'--input={root}/a.tar', '--workers=1', '--concepts']
  # Both at once: each process takes seconds to import JAX.
  good = subprocess.Popen(command + [f'--output={tmp_path}/out', '--concept_min_count=2'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  bad = subprocess.Popen(command + [f'--output={tmp_path}/bad', '--concept_min_count=0'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  stdout, stderr = good.communicate(timeout=120)
  assert good.returncode == 0, stderr
  assert stdout.splitlines()[-1].endswith('train with --config.data.concepts=True --config.model.num_concepts=6')
  assert vocabulary_of(tmp_path / 'out')[0] == [('bus', 2), ('dog', 2), ('red bus', 2), ('street', 2)]
  _, stderr = bad.communicate(timeout=120)
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert bad.returncode != 0 and lines == ['error: concept_min_count=0: must be at least 1'], stderr


def test_converting_the_train_split_again_without_concepts_removes_their_vocabulary(converted, tmp_path):
  import shutil
  from fdt_jax.data import convert
  from fdt_jax.data.converted_concepts import VOCABULARY as FILE
  root, out, _ = converted
  copy = tmp_path / 'copy'
  shutil.copytree(out, copy)
  convert.convert(str(root / '{a,b}.tar'), str(copy), overwrite=True, workers=1, log=lambda line: None)
  assert not (copy / FILE).exists() and 'concepts' not in convert.open_converted(str(copy))[0]
