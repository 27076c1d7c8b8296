"""Figures of a study: train curves per run, coloured by group."""

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (('train/loss', 'train loss'), ('train/fdt/active_tokens_image', 'active tokens per image'),
          ('train/fdt/tokens_in_use', 'tokens in use per batch'), ('train/fdt/agreement',
                                                                    'image/caption agreement'))


def curves(results: list[dict], path) -> None:
  groups = list(dict.fromkeys(r['group'] for r in results))
  colours = {g: plt.cm.tab20(i % 20) for i, g in enumerate(groups)}
  fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
  for ax, (key, title) in zip(axes, PANELS):
    for r in results:
      points = r.get('curve', {}).get(key) or []
      if points:
        steps, values = zip(*points)
        ax.plot(steps, values, color=colours[r['group']], alpha=0.8,
                label=r['group'] if r['seed'] == min(x['seed'] for x in results
                                                      if x['group'] == r['group']) else None)
    ax.set_title(title)
    ax.set_xlabel('step')
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  with open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=90)
  plt.close(fig)
