"""fdt_jax.data.convert: every good record arrives once, with its caption and its
pixels; every bad one is counted under its reason; reruns resume; bad usage fails in
one line."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from fdt_jax.data import convert, shards

LONG_CAPTION = ' '.join(f'word{i}' for i in range(1700))  # 10,489 characters
CAPTION_1000 = LONG_CAPTION[:LONG_CAPTION.rindex(' ', 0, 1001)]  # cut at the last space within 1000


def picture(seed: int, width: int = 40, height: int = 32) -> Image.Image:
  """Smooth (gradients and a flat square), so a JPEG re-encoding changes it little."""
  y, x = np.mgrid[0:height, 0:width]
  rng = np.random.default_rng(seed)
  rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, rng.integers(256))], -1)
  rgb[height // 4:height // 2, width // 4:width // 2] = rng.integers(256, size=3)
  return Image.fromarray(rgb.astype(np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  out = io.BytesIO()
  image.save(out, format=fmt, **kwargs)
  return out.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode='w') as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


def on_white(image: Image.Image) -> np.ndarray:
  rgba = np.asarray(image.convert('RGBA'), np.float64)
  return rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)


def make_inputs(root):
  """Tars and CSV/TSV files with good and bad records; returns what a conversion must give:
  {split: {caption: (expected pixels, original bytes if kept as they are, else None)}}."""
  expected = {'train': {}, 'csv': {}}
  jpeg = lambda seed, **kw: encode(picture(seed, **kw), 'JPEG', quality=90)

  def good(split, caption, data, pixels=None, kept=False):
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
    expected[split][caption] = (decoded if pixels is None else pixels, data if kept else None)
    return data

  palette = picture(7).convert('P', palette=Image.Palette.ADAPTIVE, colors=16)
  rgba = picture(5)
  rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (32, 1))))
  whole = jpeg(2)
  (root / 'a.tar').write_bytes(tar_bytes([
      ('a00.jpg', good('train', 'a red square', jpeg(0), kept=True)), ('a00.txt', b'a red square'),
      ('a01.png', good('train', 'a png picture', encode(picture(1), 'PNG'))),
      ('a01.json', json.dumps({'caption': 'a png picture', 'url': 'http://x/1.png'}).encode()),
      ('a02.jpg', whole[:len(whole) // 2]), ('a02.txt', b'a truncated jpeg'),
      ('a03.jpg', np.random.default_rng(3).bytes(2000)), ('a03.txt', b'random bytes'),
      ('a04.jpg', jpeg(4)), ('a04.txt', b''),
      ('a05.jpg', jpeg(5)), ('a05.txt', b'  \n\t '),
      ('a06.jpg', good('train', CAPTION_1000, jpeg(6), kept=True)), ('a06.txt', LONG_CAPTION.encode()),
      ('a07.png', good('train', 'a grey picture', encode(picture(7).convert('L'), 'PNG'))),
      ('a07.txt', b'a grey picture'), ('a07.cls', b'3'), ('README', b'not a record'),
  ]))
  cmyk = encode(picture(8).convert('CMYK'), 'JPEG', quality=95)
  (root / 'b.tar').write_bytes(tar_bytes([
      ('b00.jpg', good('train', 'a cmyk picture', cmyk)), ('b00.txt', b'a cmyk picture'),
      ('b01.png', encode(Image.new('RGB', (1, 1)), 'PNG')), ('b01.txt', b'one pixel'),
      ('b02.jpg', jpeg(9)),  # no caption
      ('b03.txt', b'a caption without an image'),
      ('b04.png', good('train', 'transparent', encode(rgba, 'PNG'), on_white(rgba))),
      ('b04.json', json.dumps({'text': 'transparent'}).encode()),
      ('b05.png', good('train', 'sixteen colours', encode(palette, 'PNG'))), ('b05.txt', b'sixteen colours'),
      ('b06.webp', good('train', 'a webp picture', encode(picture(10), 'WEBP', lossless=True))),
      ('b06.txt', b'a webp picture'),
      ('b07.jpg', good('train', 'caf\ufffd noir', encode(picture(11).convert('L'), 'JPEG'))),
      ('b07.txt', b'caf\xe9 noir'),  # Latin-1, not UTF-8
  ]))
  cut = tar_bytes([('c00.jpg', good('train', 'first', jpeg(12), kept=True)), ('c00.txt', b'first'),
                   ('c01.jpg', good('train', 'second', jpeg(13), kept=True)), ('c01.txt', b'second'),
                   ('c02.jpg', jpeg(14, width=200, height=200)), ('c02.txt', b'third')])
  with tarfile.open(fileobj=io.BytesIO(cut)) as tar:
    (root / 'truncated.tar').write_bytes(cut[:tar.getmember('c02.jpg').offset_data + 500])
  (root / 'garbage.tar').write_bytes(np.random.default_rng(0).bytes(5000))

  images = root / 'images'
  images.mkdir()
  (images / 'c0.jpg').write_bytes(good('csv', 'a csv jpeg', jpeg(20), kept=True))
  (images / 'c1.png').write_bytes(good('csv', 'with, a comma and "quotes"', encode(picture(21), 'PNG')))
  (images / 'c2.jpg').write_bytes(jpeg(22))
  (images / 'c3.jpg').write_bytes(good('csv', 'line one\nline two', jpeg(23), kept=True))
  (images / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff' + bytes(100))
  (root / 'rows.csv').write_text(
      'id,filepath,caption\n'
      '0,images/c0.jpg,a csv jpeg\n'
      f'1,{images / "c1.png"},"with, a comma and ""quotes"""\n'
      '2,images/not_there.jpg,a missing file\n'
      '3,images/corrupt.jpg,a corrupt file\n'
      '4,images/c2.jpg,\n'
      '5,,a caption without an image\n'
      '6,images/c3.jpg,"line one\nline two"\n')
  (root / 'sub').mkdir()
  (root / 'sub' / 'c4.jpg').write_bytes(good('csv', 'a tsv row', jpeg(24), kept=True))
  (root / 'sub' / 'rows.tsv').write_text('image\ttitle\nc4.jpg\ta tsv row\n')
  return expected


TRAIN_INPUTS = '{a,b,missing,truncated,garbage}.tar'
TRAIN_COUNTS = dict(
    records_read=19, records_written=11, shards_converted=4, num_shards=5,
    skipped={'missing_image': 1, 'missing_caption': 1, 'empty_caption': 2, 'image_too_small': 1,
             'corrupt_image': 2, 'shard_truncated': 1},
    modified={'converted_to_rgb': 5, 'reencoded': 7, 'caption_truncated': 1, 'caption_not_utf8': 1})
CSV_COUNTS = dict(
    records_read=8, records_written=4, shards_converted=5, num_shards=5,
    skipped={'missing_image': 1, 'empty_caption': 1, 'image_not_found': 1, 'corrupt_image': 1},
    modified={'reencoded': 1})


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp('inputs')
  expected = make_inputs(root)
  out = tmp_path_factory.mktemp('converted') / 'out'
  logs = []
  tensorflow_before = 'tensorflow' in sys.modules  # other test modules may import it
  stats = {'train': convert.convert([str(root / TRAIN_INPUTS)], str(out), workers=1, log=logs.append),
           'csv': convert.convert([str(root / 'rows.csv'), str(root / 'sub/rows.tsv')], str(out),
                                  split='csv', rows_per_shard=2, workers=1, log=logs.append)}
  convert.open_converted(str(out), 'train')[0]
  return types.SimpleNamespace(
      root=root, out=out, expected=expected, stats=stats, logs=logs,
      imported_tensorflow=None if tensorflow_before else 'tensorflow' in sys.modules)


def read_all(out, split, raw=False):
  import tensorflow_datasets as tfds
  decoders = {'image': tfds.decode.SkipDecoding()} if raw else None
  source = convert.open_converted(str(out), split, decoders=decoders)
  return [source[i] for i in range(len(source))]


@pytest.mark.parametrize('split', ['train', 'csv'])
def test_every_good_record_is_written_once_with_its_caption_and_pixels(converted, split):
  out, expected = converted.out, converted.expected
  records, raw = read_all(out, split), read_all(out, split, raw=True)
  captions = [r['captions'][0].decode() for r in records]
  assert all(len(r['captions']) == 1 for r in records)
  assert sorted(captions) == sorted(expected[split])  # each once
  for caption, record, stored in zip(captions, records, raw):
    pixels, original = expected[split][caption]
    assert record['image'].dtype == np.uint8 and record['image'].shape == pixels.shape
    if original is not None:  # a clean RGB JPEG: the same bytes
      assert stored['image'] == original and np.array_equal(record['image'], pixels), caption
    else:  # re-encoded
      assert Image.open(io.BytesIO(stored['image'])).format == 'JPEG'
      # quality 95 on a 40 x 32 picture with hard edges: a few levels on average
      assert np.abs(record['image'] - pixels.astype(np.float64)).mean() < 6, caption


def test_records_keep_the_order_of_their_shards(converted):
  captions = [r['captions'][0].decode() for r in read_all(converted.out, 'train')]
  assert captions[:4] == ['a red square', 'a png picture', CAPTION_1000, 'a grey picture']
  assert captions[-2:] == ['first', 'second']


@pytest.mark.parametrize('split, counts', [('train', TRAIN_COUNTS), ('csv', CSV_COUNTS)])
def test_bad_records_are_counted_by_reason(converted, split, counts):
  root, stats = converted.root, converted.stats
  assert stats[split] == convert.conversion_stats(str(converted.out))['splits'][split]
  assert {key: stats[split][key] for key in counts} == counts
  assert stats[split]['records_read'] == stats[split]['records_written'] + sum(stats[split]['skipped'].values())
  if split == 'train':
    assert stats[split]['missing_shards'] == [str(root / 'missing.tar')]
    assert sorted(stats[split]['broken_shards']) == [str(root / 'garbage.tar'), str(root / 'truncated.tar')]
    assert 'unexpected end of data' in stats[split]['broken_shards'][str(root / 'truncated.tar')]
    assert stats[split]['sources'] == [str(root / f'{name}.tar')
                                       for name in ('a', 'b', 'missing', 'truncated', 'garbage')]
  else:
    assert stats[split]['missing_shards'] == [] and stats[split]['broken_shards'] == {}


def test_writing_and_reading_need_no_tensorflow(converted):
  if converted.imported_tensorflow is None:
    pytest.skip('TensorFlow was imported before the conversion')
  assert not converted.imported_tensorflow


def test_each_finished_shard_logs_a_line_with_totals_and_rate(converted):
  lines = [line for line in converted.logs if line.startswith('convert train: shard ')]
  names = ['a.tar', 'b.tar', 'missing.tar MISSING (not found)', 'truncated.tar BROKEN (ReadError',
           'garbage.tar BROKEN (ReadError']
  assert [line.split(':')[1] for line in lines] == [f' shard {i}/5 {name}' for i, name in enumerate(names, 1)]
  assert 'this run: 9 of 16 written' in lines[1] and 'records/s' in lines[1]


def test_the_folder_is_a_tfds_dataset_of_every_split(converted):
  import tensorflow_datasets as tfds
  out = converted.out
  builder = tfds.builder_from_directory(str(out))
  assert {name: info.num_examples for name, info in builder.info.splits.items()} == {'train': 11, 'csv': 4}
  assert builder.info.splits['train'].shard_lengths == [4, 5, 0, 2, 0]  # missing.tar: an empty shard
  assert builder.info.splits['train'].num_bytes > 0
  assert set(builder.info.features) == {'image', 'captions'}
  with pytest.raises(ValueError, match='no split .validation.; it has'):
    convert.open_converted(str(out), 'validation')


def test_a_rerun_converts_nothing_again(converted):
  root, out = converted.root, converted.out
  shards = sorted(p for p in os.listdir(out) if '-train.array_record-' in p)
  converted_shards = [p for p in shards if '00002-of-' not in p]  # not the missing one
  before = {p: os.stat(out / p).st_mtime_ns for p in converted_shards}
  logs = []
  again = convert.convert([str(root / TRAIN_INPUTS)], str(out), workers=1, log=logs.append)
  assert {p: os.stat(out / p).st_mtime_ns for p in converted_shards} == before
  assert 'resuming, 4 of 5 shards already converted' in logs[0]
  assert [line for line in logs if ': shard ' in line] == [  # only the missing one, tried again
      next(line for line in logs if 'shard 5/5 missing.tar MISSING' in line)]
  assert again == converted.stats['train']


def test_an_interrupted_conversion_resumes_to_the_same_dataset(converted, tmp_path):
  root, out = converted.root, converted.out
  resumed = tmp_path / 'resumed'
  tasks = convert.plan_shards(str(root / TRAIN_INPUTS), str(resumed)).tasks
  convert.convert_shard(tasks[0])  # a run that stopped after the first shard...
  with open(tasks[1].data_path, 'wb') as f:  # ...and in the middle of renaming the second
    f.write(b'not done')
  leftover = tasks[2].counts_path.replace('.json', '.array_record.tmp')
  open(leftover, 'wb').close()
  first = os.stat(tasks[0].data_path).st_mtime_ns
  logs = []
  again = convert.convert(str(root / TRAIN_INPUTS), str(resumed), workers=2, log=logs.append)
  assert 'resuming, 1 of 5 shards already converted' in logs[0]
  assert os.stat(tasks[0].data_path).st_mtime_ns == first
  assert not os.path.exists(leftover)
  assert again == converted.stats['train']
  for a, b in zip(read_all(out, 'train', raw=True), read_all(resumed, 'train', raw=True), strict=True):
    assert a['image'] == b['image'] and list(a['captions']) == list(b['captions'])


def test_other_inputs_for_a_converted_split_need_overwrite(converted, tmp_path):
  root = converted.root
  out = tmp_path / 'out'
  convert.convert(str(root / 'a.tar'), str(out), workers=1, log=lambda line: None)
  with pytest.raises(convert.ConversionError, match='--overwrite'):
    convert.convert(str(root / 'b.tar'), str(out), workers=1, log=lambda line: None)
  stats = convert.convert(str(root / 'b.tar'), str(out), workers=1, overwrite=True, log=lambda line: None)
  assert stats['records_written'] == 5 and len(convert.open_converted(str(out), 'train')) == 5


def test_resize_max_downscales_the_shorter_side_keeping_the_aspect(tmp_path):
  tar = tmp_path / 'big.tar'
  tar.write_bytes(tar_bytes([('0.jpg', encode(picture(0, 120, 90), 'JPEG')), ('0.txt', b'big'),
                             ('1.jpg', encode(picture(1, 40, 24), 'JPEG')), ('1.txt', b'small')]))
  stats = convert.convert(str(tar), str(tmp_path / 'out'), resize_max=30, workers=1, log=lambda line: None)
  source = convert.open_converted(str(tmp_path / 'out'), 'train')
  assert [source[i]['image'].shape for i in range(2)] == [(30, 40, 3), (24, 40, 3)]
  assert stats['modified'] == {'reencoded': 1, 'resized': 1}


def test_brace_patterns_expand_like_the_shell():
  assert shards.expand_braces('/d/{00008..00011}.tar') == [f'/d/{i:05d}.tar' for i in range(8, 12)]
  assert shards.expand_braces('{a,b{1..2}}-{x,y}') == ['a-x', 'a-y', 'b1-x', 'b1-y', 'b2-x', 'b2-y']
  assert shards.expand_braces('{3..1}') == ['3', '2', '1']
  assert shards.expand_braces('plain{x}.tar') == ['plain{x}.tar']


@pytest.mark.parametrize('case, message', [
    ('no input', 'no input matched'),
    ('output under a file', 'cannot write to --output='),
    ('unknown column', "has no caption column 'text'; its columns are 'id', 'filepath', 'caption'"),
])
def test_bad_usage_is_one_clear_sentence(converted, tmp_path, case, message):
  root = converted.root
  (tmp_path / 'a_file').write_text('')
  inputs, output, options = {
      'no input': (f'{tmp_path}/nothing/{{0..9}}.tar', tmp_path / 'out', {}),
      'output under a file': (f'{root}/a.tar', tmp_path / 'a_file' / 'out', {}),
      'unknown column': (f'{root}/rows.csv', tmp_path / 'out', {'caption_column': 'text'}),
  }[case]
  with pytest.raises(convert.ConversionError, match=message) as error:
    convert.convert(inputs, str(output), log=lambda line: None, **options)
  assert '\n' not in str(error.value)


def test_the_command_line_converts_and_reports_bad_usage_in_one_line(converted, tmp_path):
  root = converted.root
  command = [sys.executable, '-m', 'fdt_jax.data.convert']
  bad = {"no caption column 'text'": [f'--input={root}/rows.csv', f'--output={tmp_path}', '--caption_column=text']}
  good = [f'--input={root}/sub/*.tsv', f'--output={tmp_path}/out', '--split=tsv', '--workers=1',
          '--delimiter=\\t', '--image_column=image', '--min_size=4']
  # All at once: each process takes seconds to import JAX (fdt_jax.data imports the models).
  runs = {message: subprocess.Popen(command + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for message, args in [*bad.items(), ('', good)]}
  for message, run in runs.items():
    stdout, stderr = run.communicate(timeout=120)
    if not message:
      assert run.returncode == 0, stderr
      assert 'convert tsv: shard 1/1 rows.tsv rows 1-1: 1 written, 0 skipped' in stdout
      continue
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert run.returncode != 0 and len(lines) == 1, stderr
    assert lines[0].startswith('error: ') and message in lines[0], stderr
  stats = convert.conversion_stats(str(tmp_path / 'out'))['splits']['tsv']
  assert stats['records_written'] == 1 and stats['settings']['min_size'] == 4


@pytest.mark.slow
def test_the_trainer_reads_converted_shards_and_their_tokenizer(converted, shapes_dir, tmp_path):
  from conftest import micro_config
  from fdt_jax.train import loop
  from fdt_jax.run import read_jsonl

  out = tmp_path / 'copy'
  shutil.copytree(converted.out, out)
  convert.write_tokenizer(str(out), vocab_size=40)
  config = micro_config(shapes_dir, total_steps=3, log_every_steps=1, batch_size=8)
  config.data.name = f'dir:{out}'  # its tokenizer; trained on a mixture with the shapes data
  config.data.mixture = ((f'dir:{out}', 0.5), ('shapes', 0.5))
  config.evals = {'test': dict(type='retrieval', split='csv')}  # the 4 records of the CSV split
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['test/t2i_R@10'] == 100  # 4 images: every caption's image is in its top 10
  records = read_jsonl(tmp_path / 'run' / 'metrics.jsonl')
  losses = [r['train/loss'] for r in records if 'train/loss' in r]
  assert len(losses) == 3 and all(np.isfinite(losses))
  # The conversion's counts are part of the run's record.
  assert records[0]['data/records_written'] == TRAIN_COUNTS['records_written']
  assert records[0]['data/skipped_corrupt_image'] == TRAIN_COUNTS['skipped']['corrupt_image']
  assert records[0]['data/missing_shards'] == 1
