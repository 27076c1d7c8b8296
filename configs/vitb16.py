r"""FDT on ViT-B/16 with the ViT-B/32 recipe (configs/vitb32.py), for TPU pods and GPU clusters.

  python -m fdt_jax.main --config=configs/vitb16.py --workdir=gs://BUCKET/runs/vitb16 \
      --config.data.name=dir:gs://BUCKET/cc3m_fdt
  python -m fdt_jax.main --config=configs/vitb16.py:clip ...    # the CLIP baseline (FDT off)
  python -m fdt_jax.main --config=configs/vitb16.py:mamo ...    # MAMO (models/mamo.py)
  python -m fdt_jax.main --config=configs/vitb16.py:mvptr ... --config.model.num_concepts=N
      # MVPTR (models/mvptr.py), on data converted with --concepts: see below

MAMO (Zhao et al., SIGIR 2023; from a review of the full text, not checked against the paper):
ViT-B/16 and a BERT-base-sized text side (768 wide; as in ALBEF, 6 text layers then 6 fusion
layers), 75 % of patches and 25 % of words masked jointly, the five losses with equal weights;
pre-trained on CC3M + SBU + VG + COCO (4.1M images, 9.7M pairs) for 40 epochs, ablations at
10. The paper's batch, optimizer and learning rate are unknown: ours are the FDT recipe's
below, the EMA decay 0.995 the ALBEF family's; the fine-tuned retrieval the paper reports is
not what this trains.

MVPTR (Li et al., ACM MM 2022; the authors' code, Junction4Nako/mvp_pytorch): three 6-layer
stacks 768 wide with 12 heads (text, visual, fusion), here after a ViT-B/16 whose patches stand
in for the authors' 50 detector regions; 5 phrases and 20 tags; words, tags and phrases
masked at 15 %; VSC, ITM with the hardest in-batch negatives, MLM, MCR and WPG at weight 1
every step. The authors' vocabulary has 73,599 concepts (scene-graph tuples seen in >= 50
sentences); here each concept gets its own row of the shared table (the authors reuse a
word's row for the 18,570 one-word concepts), plus padding and mask. They report fine-tuned
R@1 COCO 5k image/text 60.1/77.3 and Flickr 84.0/95.2 after pre-training on ~9M pairs;
their code's AdamW defaults (lr 5e-5, weight decay 0.01) start from BERT, so ours is the FDT
recipe's below, trained from scratch. The concepts come from the conversion:
`python -m fdt_jax.data.convert ... --concepts` stores each caption's tuples (data/phrases.py,
a chunker, not the authors' scene-graph parser) and writes the vocabulary of those stated by
>= 50 train captions; the tags of an image are its captions' concepts. num_concepts below is
the authors' 73,599 + 2; the conversion prints the number for its data, and the trainer refuses
another in one line (as it refuses data converted without --concepts). 404M parameters with
the authors' count (the shared table: 94M).

launch/README.md shows how to run it on a Cloud TPU pod slice or a SLURM cluster.
Expected: above the ViT-B/32 numbers of the same data; we have not run it (README).
"""

import importlib.util
import os

import ml_collections


def get_config(arg: str = 'fdt'):
  # The same recipe as ViT-B/32 but the patch size; configs are files, so load the sibling.
  spec = importlib.util.spec_from_file_location(
      'vitb32', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'vitb32.py'))
  vitb32 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vitb32)
  if arg not in ('fdt', 'clip', 'mamo', 'mvptr'):
    raise ValueError(f'configs/vitb16.py:{arg}: use configs/vitb16.py (FDT), configs/vitb16.py:clip, '
                     'configs/vitb16.py:mamo or configs/vitb16.py:mvptr')
  c = vitb32.get_config('clip' if arg in ('mamo', 'mvptr') else arg)
  c.model.variant = 'ViT-B-16'
  c.model.remat = True  # 197 tokens per image: recompute blocks rather than keep activations
  if arg == 'mamo':
    c.model = ml_collections.ConfigDict(dict(
        name='mamo', variant='ViT-B-16', init_from='', init_text_tower=True, ema_decay=0.995,
        vision={}, text=dict(width=768, layers=6, heads=12), fusion_layers=6, image_fusion=True,
        image_mask_ratio=0.75, text_mask_ratio=0.25, quick_gelu=False, dtype='bfloat16',
        remat=True))
    c.objectives = ml_collections.ConfigDict(
        {'infonce': 1.0, 'itm': 1.0, 'mlm': 1.0, 'patch_target': 1.0, 'implicit_target': 1.0})
    c.evals.coco_fusion = dict(type='masked_words', dataset='coco_captions', split='test',
                               max_examples=5000)
    # Re-ranking by ITM as the family's papers evaluate (MVPTR's code: 128 captions per image,
    # 64 images per caption; ALBEF's k for COCO is larger). The unimodal features of the 5k
    # images and 25k captions are kept on the host for it (several GB).
    c.evals.coco = dict(type='retrieval', dataset='coco_captions', split='test', itm_rerank=128)
  if arg == 'mvptr':
    c.data.concepts = True
    # num_concepts: the authors' vocabulary + padding and mask; the converted data's is its own.
    c.model = ml_collections.ConfigDict(dict(
        name='mvptr', variant='ViT-B-16', init_from='', init_text_tower=True, vision={},
        text=dict(width=768, layers=6, heads=12), num_concepts=73599 + 2, max_phrases=5,
        visual_layers=6, fusion_layers=6, word_mask_ratio=0.15, tag_mask_ratio=0.15,
        phrase_mask_ratio=0.15, concept_dropout=0.5, quick_gelu=False, dtype='bfloat16',
        remat=True))
    c.objectives = ml_collections.ConfigDict(
        {'infonce': 1.0, 'itm_hardest': 1.0, 'mlm': 1.0, 'mcr': 1.0, 'wpg': 1.0})
    # The authors' code re-ranks the top 128 captions of each image and 64 images of each
    # caption by ITM; the evaluator takes one K for both.
    c.evals.coco = dict(type='retrieval', dataset='coco_captions', split='test', itm_rerank=128)
  return c
