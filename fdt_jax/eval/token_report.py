"""The report of fdt_jax.inspect: per-token details, PNG figures and a markdown page.

    OUT/inspect.json     the summary numbers (tokens.summary; definitions in token_stats)
    OUT/tokens.json      every token in use: mass, purity and top concept per modality,
                         top words, top images
    OUT/token_patches.png  the most used tokens: their score over the patch grid (upsampled)
                           on the images that weigh them most, the argmax patch boxed
    OUT/token_words.png    the words at which the same tokens fire hardest
    OUT/purity.png         per-token purity, image vs text vs chance (shapes only)
    OUT/usage.png          how the activation mass spreads over tokens; tokens per input
    OUT/report.md          the numbers and the figures, ready to paste into a README

Figures are matplotlib `Figure` objects (no pyplot state), so notebooks can show them too.
"""

import json
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from fdt_jax.data import shapes
from fdt_jax.eval import token_stats as ts
from fdt_jax.eval import tokens

TOKENS_SHOWN = 12  # the most used tokens get figures
IMAGES_PER_TOKEN = 4
WORDS_PER_TOKEN = 5


def best_concepts(weights: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[tuple]:
  """Per token: (concept, its type, purity within that type), for the type whose purity
  beats its chance (permuted labels, mean over tokens) by the most; None if unused."""
  chance = ts.permuted(labels, seed)
  candidates = []  # per type: (purity [C], top concept name per token [C], margin [C])
  for kind, columns in ts.concept_types().items():
    mass = ts.concept_mass(weights, labels[:, columns])
    purity = ts.token_purity(mass)
    margin = purity - ts.mean_purity(ts.concept_mass(weights, chance[:, columns]))
    names = np.asarray(shapes.CONCEPTS)[np.asarray(columns)[mass.argmax(-1)]]
    candidates.append((kind, purity, names, np.nan_to_num(margin, nan=-np.inf)))
  best = np.argmax(np.stack([m for *_, m in candidates]), axis=0)
  result = []
  for c, t in enumerate(best):
    kind, purity, names, margin = candidates[t]
    result.append((str(names[c]), kind, float(purity[c])) if np.isfinite(margin[c]) else None)
  return result


def token_table(acts: tokens.Activations, seed: int = 0) -> list[dict]:
  """One entry per token in use, the most used (image + text mass) first."""
  image_mass = ts.normalized(acts.image_weights).sum(0)
  text_mass = ts.normalized(acts.text_weights).sum(0)
  in_use = np.flatnonzero(ts.tokens_in_use(acts.image_weights, acts.text_weights))
  order = in_use[np.argsort(-(image_mass + text_mass)[in_use], kind='stable')]
  words = ts.top_words(acts.text_weights, acts.text_argmax, acts.words, list(order), WORDS_PER_TOKEN)
  per_modality = {}
  if acts.labels is not None:
    for modality, weights in (('image', acts.image_weights), ('text', acts.text_weights)):
      purity = ts.token_purity(ts.concept_mass(weights, acts.labels))
      per_modality[modality] = (purity, best_concepts(weights, acts.labels, seed))
  table = []
  for c in order:
    entry = {'token': int(c), 'image_mass': float(image_mass[c]), 'text_mass': float(text_mass[c]),
             'images_active': int((acts.image_weights[:, c] > 0).sum()),
             'texts_active': int((acts.text_weights[:, c] > 0).sum())}
    for modality, (purity, best) in per_modality.items():
      used = best[c] is not None
      entry[f'purity_{modality}'] = float(purity[c]) if used else None
      entry[f'concept_{modality}'], entry[f'concept_type_{modality}'], entry[f'type_purity_{modality}'] = (
          best[c] if used else (None, None, None))
    entry['top_words'] = [[w, round(s, 4)] for w, s in words[int(c)]]
    entry['top_images'] = ts.top_inputs(acts.image_weights, int(c), IMAGES_PER_TOKEN)
    table.append(entry)
  return table


def _label(entry: dict, modality: str) -> str:
  """'yellow (colour 0.93)': the token's best concept and its purity within its type."""
  concept = entry.get(f'concept_{modality}')
  if not concept:
    return ''
  return f'{concept} ({entry[f"concept_type_{modality}"]} {entry[f"type_purity_{modality}"]:.2f})'


def spotlight(image: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """uint8 image dimmed where the token's score is low: the score map [grid, grid],
  upsampled bilinearly and rescaled to [0, 1] per image, sets the brightness."""
  size = image.shape[0]
  upsampled = np.asarray(Image.fromarray(scores.astype(np.float32), 'F').resize(
      (size, size), Image.Resampling.BILINEAR))
  span = upsampled.max() - upsampled.min()
  level = (upsampled - upsampled.min()) / span if span > 0 else np.ones_like(upsampled)
  return (image * (0.15 + 0.85 * level[..., None])).astype(np.uint8)


def patches_figure(acts: tokens.Activations, table: list[dict], score_maps: dict) -> Figure:
  """Rows: tokens; columns: their top images with the token's score map over them.

  score_maps: (image index, token) -> float [grid, grid].
  """
  shown = table[:TOKENS_SHOWN]
  fig = Figure(figsize=(1.5 * IMAGES_PER_TOKEN + 0.6, 1.6 * max(len(shown), 1)), layout='constrained')
  axes = fig.subplots(max(len(shown), 1), IMAGES_PER_TOKEN, squeeze=False)
  size = acts.images.shape[1]
  for row, entry in zip(axes, shown):
    c = entry['token']
    row[0].set_ylabel(f'token {c}\n{_label(entry, "image")}', fontsize=8)
    for ax, i in zip(row, entry['top_images']):
      scores = score_maps[(i, c)]
      grid = scores.shape[0]
      ax.imshow(spotlight(acts.images[i], scores))
      y, x = divmod(int(acts.image_argmax[i, c]), grid)
      cell = size / grid
      ax.add_patch(Rectangle((x * cell, y * cell), cell, cell, fill=False, edgecolor='cyan', linewidth=1.5))
      ax.set_title(f'#{i}  w={acts.image_weights[i, c]:.2g}', fontsize=7)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle('Most used tokens: score over the patches of the images that weigh them most', fontsize=9)
  return fig


def words_figure(table: list[dict]) -> Figure:
  shown = table[:TOKENS_SHOWN]
  columns = 4
  rows = max(1, -(-len(shown) // columns))
  fig = Figure(figsize=(3.0 * columns, 1.8 * rows), layout='constrained')
  axes = fig.subplots(rows, columns, squeeze=False)
  for ax, entry in zip(axes.flat, shown):
    words = entry['top_words'][::-1]
    if not words:
      ax.text(0.5, 0.5, 'no caption uses it', ha='center', va='center', fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
    ax.barh([w for w, _ in words], [s for _, s in words], color='tab:blue')
    ax.set_title(f'token {entry["token"]}  {_label(entry, "text")}', fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in axes.flat[len(shown):]:
    ax.axis('off')
  fig.suptitle('Words at which each token fires hardest (summed caption weight)', fontsize=9)
  return fig


def purity_figure(acts: tokens.Activations, seed: int = 0) -> Figure:
  """Mass-weighted histograms of per-token purity, against the permuted-label chance."""
  fig = Figure(figsize=(6, 3.5), layout='constrained')
  ax = fig.subplots()
  bins = np.linspace(0, 1, 21)
  chance = ts.permuted(acts.labels, seed)
  for name, weights, labels, style in (
      ('image', acts.image_weights, acts.labels, dict(color='tab:orange')),
      ('text', acts.text_weights, acts.labels, dict(color='tab:blue')),
      ('image, chance', acts.image_weights, chance, dict(color='tab:orange', linestyle=':')),
      ('text, chance', acts.text_weights, chance, dict(color='tab:blue', linestyle=':'))):
    mass = ts.concept_mass(weights, labels)
    used = mass.sum(-1) > 0
    ax.hist(ts.token_purity(mass)[used], bins=bins, weights=mass.sum(-1)[used] / mass.sum(),
            histtype='step', linewidth=1.8, label=f'{name}: {ts.mean_purity(mass):.2f}', **style)
  ax.set_xlabel('token purity (share of its mass on its top concept)')
  ax.set_ylabel('share of activation mass')
  ax.legend(fontsize=8, title='mean purity', title_fontsize=8)
  return fig


def usage_figure(acts: tokens.Activations) -> Figure:
  fig = Figure(figsize=(10, 3.2), layout='constrained')
  left, right = fig.subplots(1, 2)
  for name, weights, colour in (('images', acts.image_weights, 'tab:orange'),
                                ('captions', acts.text_weights, 'tab:blue')):
    mass = np.sort(ts.normalized(weights).sum(0))[::-1]
    mass = mass[mass > 0] / len(weights)
    left.plot(np.arange(1, len(mass) + 1), mass, color=colour, label=f'{name}: {len(mass)} tokens')
    counts = ts.active_counts(weights)
    right.hist(counts, bins=np.arange(counts.max() + 2) - 0.5, histtype='step', color=colour,
               linewidth=1.8, label=f'{name}: mean {counts.mean():.1f}')
  left.set(xscale='log', yscale='log', xlabel='token rank', ylabel='mean weight per input')
  right.set(xlabel='active tokens per input', ylabel='inputs')
  left.legend(fontsize=8)
  right.legend(fontsize=8)
  return fig


def markdown(numbers: dict, table: list[dict], figures: list[str]) -> str:
  """A short README-ready page: the headline numbers, the figures, the top tokens."""
  n = numbers
  lines = [f'## FDT tokens at step {n["step"]} ({n["num_examples"]} images, one caption each)', '',
           '| measure | images | captions |', '| --- | --- | --- |',
           f'| active tokens per input | {n["active_per_image"]:.1f} | {n["active_per_text"]:.1f} |',
           f'| effective tokens per input | {n["effective_per_image"]:.1f} | {n["effective_per_text"]:.1f} |',
           f'| tokens in use | {n["tokens_in_use_image"]} | {n["tokens_in_use_text"]} |']
  if 'purity_image' in n:
    lines.append(f'| concept purity (chance) | {n["purity_image"]:.2f} ({n["purity_image_chance"]:.2f}) '
                 f'| {n["purity_text"]:.2f} ({n["purity_text_chance"]:.2f}) |')
    for kind in ts.concept_types():
      lines.append(f'| {kind} purity (chance) | {n[f"purity_image_{kind}"]:.2f} '
                   f'({n[f"purity_image_{kind}_chance"]:.2f}) | {n[f"purity_text_{kind}"]:.2f} '
                   f'({n[f"purity_text_{kind}_chance"]:.2f}) |')
  lines += ['', f'{n["tokens_in_use"]} of {n["num_tokens"]} tokens are in use, {n["dead_tokens"]} '
            f'dead ({100 * n["dead_share"]:.0f} %). An image and its caption agree on '
            f'{n["agreement"]:.2f} of their token weight (an image and another caption: '
            f'{n["agreement_chance"]:.2f}).', '']
  lines += [f'![{name}]({name})' for name in figures]
  lines += ['', '| token | image: concept (purity in its type) | caption: concept (purity in its type) | top words |',
            '| --- | --- | --- | --- |']
  for entry in table[:TOKENS_SHOWN]:
    words = ', '.join(w for w, _ in entry['top_words'])
    lines.append(f'| {entry["token"]} | {_label(entry, "image")} | {_label(entry, "text")} | {words} |')
  return '\n'.join(lines) + '\n'


def shown_score_maps(run: tokens.Run, acts: tokens.Activations, table: list[dict]) -> dict:
  """(image index, token) -> score map [grid, grid], for the tokens patches_figure shows."""
  shown = table[:TOKENS_SHOWN]
  token_ids = [e['token'] for e in shown]
  image_ids = sorted({i for e in shown for i in e['top_images']})
  if not image_ids:
    return {}
  maps = tokens.image_score_maps(run.model, acts.images[image_ids], token_ids)
  return {(i, c): maps[a, b] for a, i in enumerate(image_ids) for b, c in enumerate(token_ids)}


def write_report(run: tokens.Run, acts: tokens.Activations, out: str) -> dict:
  """Writes everything listed in the module docstring into `out`; returns the summary."""
  os.makedirs(out, exist_ok=True)
  numbers = tokens.summary(acts)
  table = token_table(acts)
  figures = {'token_patches.png': patches_figure(acts, table, shown_score_maps(run, acts, table)),
             'token_words.png': words_figure(table), 'usage.png': usage_figure(acts)}
  if acts.labels is not None:
    figures['purity.png'] = purity_figure(acts)
  for name, fig in figures.items():
    fig.savefig(os.path.join(out, name), dpi=110)
  with open(os.path.join(out, 'inspect.json'), 'w') as f:
    json.dump(numbers, f, indent=1)
  with open(os.path.join(out, 'tokens.json'), 'w') as f:
    json.dump(table, f, indent=1)
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(markdown(numbers, table, list(figures)))
  return numbers
