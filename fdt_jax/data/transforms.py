"""Image and text transforms shared by training and evaluation."""

import io

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# OpenAI CLIP's normalisation (also open_clip's default).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_images(images):
  """uint8 [..., H, W, 3] -> float32 normalised with CLIP's mean and std (runs on device)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def to_rgb(image) -> Image.Image:
  """Any PIL image, encoded bytes or uint8 array -> an RGB PIL image (grayscale, CMYK,
  palette and alpha images included). Raises ValueError on undecodable bytes."""
  if isinstance(image, (bytes, bytearray)):
    try:
      image = Image.open(io.BytesIO(image))
      image.load()
    except Exception as e:  # PIL raises several types for broken files
      raise ValueError(f'undecodable image: {e}') from e
  elif isinstance(image, np.ndarray):
    image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image)
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'):  # 16-bit: scaled down
    image = Image.fromarray(np.clip(np.asarray(image, np.float64) / 257, 0, 255).astype(np.uint8))
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in image.info:
    # Transparency matted on white, as img2dataset does.
    image = Image.alpha_composite(Image.new('RGBA', image.size, (255, 255, 255, 255)),
                                  image.convert('RGBA'))
  return image.convert('RGB')


def resize_center_crop(image, size: int) -> np.ndarray:
  """CLIP's evaluation transform (as open_clip's preprocess): the shorter side resized to
  `size` (bicubic), then the centre `size` x `size` crop."""
  image = to_rgb(image)
  if image.size != (size, size):
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
  return np.asarray(image, dtype=np.uint8)


def mocov2_augment(image, size: int, rng: np.random.Generator) -> np.ndarray:
  """The authors' training augmentation (MoCo v2): random resized crop (scale 0.2-1),
  colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur
  (sigma 0.1-2) p=0.5, horizontal flip p=0.5."""
  image = to_rgb(image)
  width, height = image.size
  area = width * height
  for _ in range(10):  # torchvision's RandomResizedCrop sampling, ratio 3/4-4/3
    target = area * rng.uniform(0.2, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w, h = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
      break
  else:
    w = h = min(width, height)
    left, top = (width - w) // 2, (height - h) // 2
  image = image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
  if rng.random() < 0.8:
    jitters = [
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(0.6, 1.4)),
        lambda im: _shift_hue(im, rng.uniform(-0.1, 0.1)),
    ]
    for i in rng.permutation(4):
      image = jitters[i](image)
  if rng.random() < 0.2:
    image = ImageOps.grayscale(image).convert('RGB')
  if rng.random() < 0.5:
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
  if rng.random() < 0.5:
    image = ImageOps.mirror(image)
  return np.asarray(image, dtype=np.uint8)


def _shift_hue(image: Image.Image, fraction: float) -> Image.Image:
  # PIL's 8-bit HSV, so close to torchvision's float hue shift but not exact. dm-pix has the
  # exact colour-space ops, in JAX: per example in grain's CPU workers they would compile
  # and dispatch JAX ops beside the training step, for one augmentation of five.
  hsv = np.asarray(image.convert('HSV')).copy()
  hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(fraction * 255))) % 256
  return Image.fromarray(hsv, 'HSV').convert('RGB')
