r"""The authors' recipe: FDT on ViT-B/32, CC3M, 32 epochs (Chen et al., CVPR 2023).

  python -m fdt_jax.main --config=configs/vitb32.py --workdir=gs://BUCKET/runs/vitb32 \
      --config.data.name=dir:gs://BUCKET/cc3m_fdt
  python -m fdt_jax.main --config=configs/vitb32.py:clip ...    # the CLIP baseline (FDT off)

Data: CC3M shards converted with `python -m fdt_jax.data.convert` (README, "Real data");
its sentencepiece model is found in that directory. Evaluations need imagenet2012 and
coco_captions prepared as ArrayRecord in --config.data.data_dir.

The paper reports, for this recipe: zero-shot ImageNet top-1 18.4 (CLIP baseline 15.4)
and COCO 5k retrieval rsum 189.5 (CLIP 145.1). We have not run it; see the README.
"""

from fdt_jax.config import base_config

CC3M_EXAMPLES = 2_769_025  # in the authors' shards
EPOCHS = 32


def get_config(arg: str = 'fdt'):
  if arg not in ('fdt', 'clip'):
    raise ValueError(f'configs/vitb32.py:{arg}: use configs/vitb32.py (FDT) or configs/vitb32.py:clip')
  c = base_config()
  c.batch_size = 1024  # 8 GPUs x 128 in the authors' runs
  steps_per_epoch = CC3M_EXAMPLES // c.batch_size  # 2704
  c.total_steps = EPOCHS * steps_per_epoch
  c.log_every_steps = 100
  c.eval_every_steps = steps_per_epoch
  c.checkpoint_every_steps = 1000

  c.model.variant = 'ViT-B-32'
  c.model.dtype = 'bfloat16'
  c.model.fdt.update(enabled=(arg == 'fdt'), num_tokens=16384, dim=512, temperature=1000.0,
                     pooling='max', normalizer='sparsemax')

  c.data.name = 'dir:'  # set to dir:PATH of the converted CC3M shards
  c.data.augmentation = 'mocov2'
  c.data.num_workers = 8

  # AdamW (0.9, 0.98), eps 1e-8, weight decay 0.1 except LayerNorm, biases and the logit
  # scale; warmup 1e-4 -> 1e-3 over 2500 steps, cosine to 0; patch embedding frozen.
  c.optimizer.update(learning_rate=1e-3, warmup_init_lr=1e-4, warmup_steps=2500, end_lr=0.0,
                     b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.1, decay_fdt_tokens=True,
                     frozen=('visual.conv1',))

  c.eval_batch_size = 1024
  # COCO retrieval every epoch; ImageNet zero-shot (50k images, 80 prompts x 1000 classes)
  # every 8 epochs; both at the end.
  c.evals.imagenet = dict(type='zeroshot_classification', dataset='imagenet2012', split='validation',
                          every_steps=8 * steps_per_epoch)
  c.evals.coco = dict(type='retrieval', dataset='coco_captions', split='test')  # Karpathy 5k
  return c
