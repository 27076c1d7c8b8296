"""The text tower: a transformer laid out like OpenAI CLIP's text encoder, causal as CLIP's
(or bidirectional, over the positions up to end-of-text, for masked-word families)."""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from fdt_jax.models.transformer import Transformer, constrain, layer_norm, normal, sharded


@dataclasses.dataclass(frozen=True)
class TextConfig:
  context_length: int = 77
  vocab_size: int = 49408
  width: int = 512
  layers: int = 12
  heads: int = 8
  mlp_ratio: float = 4.0


def end_of_text_position(tokens: jax.Array) -> jax.Array:
  """CLIP's pooling position: the end-of-text token has the largest id of the vocabulary.

  The project's tokenizers keep that convention (padding is 0, end-of-text is
  vocab_size - 1), so `argmax` finds it, exactly as open_clip's 'argmax' pooling does.
  """
  return jnp.argmax(tokens, axis=-1)


def valid_positions(tokens: jax.Array) -> jax.Array:
  """[batch, length] bool: the positions up to and including end-of-text."""
  return jnp.arange(tokens.shape[-1]) <= end_of_text_position(tokens)[:, None]


class TextTransformer(nnx.Module):
  """token_embedding + positions -> causal transformer -> ln_final -> [end-of-text] @ text_projection."""

  def __init__(self, cfg: TextConfig, embed_dim: int, *, activation, remat: bool, dtype,
               rngs: nnx.Rngs, causal: bool = True, remat_policy: str = 'nothing_saveable'):
    self.cfg = cfg
    self.dtype = dtype
    self.causal = causal
    width = cfg.width
    self.token_embedding = nnx.Embed(
        cfg.vocab_size, width, dtype=dtype, rngs=rngs,
        embedding_init=sharded(normal(0.02), 'vocab', 'embed'))
    self.positional_embedding = nnx.Param(
        sharded(normal(0.01), None, 'embed')(rngs.params(), (cfg.context_length, width)))
    self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, causal=causal,
                                   activation=activation, remat=remat, dtype=dtype, rngs=rngs,
                                   remat_policy=remat_policy)
    self.ln_final = layer_norm(width, dtype, rngs)
    self.text_projection = nnx.Param(
        sharded(normal(width ** -0.5), 'embed', 'proj')(rngs.params(), (width, embed_dim)))

  def __call__(self, tokens: jax.Array, replace: jax.Array | None = None,
               replacement: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """tokens: [batch, context_length] int32, 0-padded, end-of-text = the largest id;
    `replace` (bool [batch, length]) swaps those positions' token embeddings for
    `replacement` [width] (a learned mask embedding).

    Returns the CLIP head output [batch, embed_dim] (not normalised), the ln_final
    outputs of every position [batch, length, width] and their validity mask
    [batch, length] (False after end-of-text), which is what the FDT head reads.
    """
    length = tokens.shape[-1]
    if length > self.cfg.context_length:
      raise ValueError(f'{length} text tokens exceed the context length {self.cfg.context_length}')
    x = self.token_embedding(tokens)
    if replace is not None:
      x = jnp.where(replace[..., None], replacement.astype(self.dtype), x)
    x = x + self.positional_embedding[:length].astype(self.dtype)
    x = constrain(x, 'act_batch', 'act_length', 'act_embed')
    key_mask = None if self.causal else valid_positions(tokens)  # causal: padding comes last
    x = self.ln_final(self.transformer(x, key_mask))  # [batch, length, width]
    eot = end_of_text_position(tokens)
    pooled = x[jnp.arange(x.shape[0]), eot] @ self.text_projection.astype(self.dtype)
    return pooled, x, valid_positions(tokens)
