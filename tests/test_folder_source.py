"""Image folders as a source (folder:PATH): layouts, labels, every file type
and listing, on real files written with PIL (the run's stored file index
and slices: tests/test_folder_index.py; bad files and the pretraining
stream: tests/test_folder_reads.py)."""

import functools
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from contrastive_jax.data import sources
from contrastive_jax.data.sources import folder_index
from contrastive_jax.data.sources import folder_listing, image_bytes
from contrastive_jax.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def fresh_listings():
  # A new run is a new process, which lists its folders again.
  folder_index.forget_listings()
  yield
  folder_index.forget_listings()


@functools.lru_cache(maxsize=1)
def china():
  """scikit-learn's china.jpg, uint8 [427, 640, 3]: real image content."""
  from sklearn.datasets import load_sample_images
  return np.asarray(load_sample_images().images[0])


@pytest.fixture(scope='module')
def photo():
  """A 24x32 crop of china.jpg."""
  return china()[100:124, 200:232].copy()


def save(path, image, fmt=None, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  image.save(path, fmt, **kwargs)


def tiny(rng):
  """A random 10x12 crop of china.jpg."""
  top, left = rng.integers(0, 400), rng.integers(0, 600)
  return china()[top:top + 10, left:left + 12].copy()


def imagenet_tree(root, splits, files_per_class=2):
  """root/<split>/<class>/<k>.png; images[path] is each file's pixels."""
  rng = np.random.default_rng(0)
  images = {}
  for split, classes in splits.items():
    for name in classes:
      for k in range(files_per_class):
        path = os.path.join(root, split, name, f'{k}.png')
        images[path] = tiny(rng)
        save(path, images[path])
  return images


def decoded(source, indices=None):
  """{'image', 'label'} of `indices` read through source.read/decode."""
  if indices is None:
    indices = range(source.num_examples)
  group = source.read(tf.constant(list(indices), tf.int64))
  return [{k: v.numpy() for k, v in
           source.decode({k: v[i] for k, v in group.items()}).items()}
          for i in range(len(indices))]


def open_folder(root, split='train', workdir=None, **options):
  return sources.open_source(f'folder:{root}', split, workdir=workdir,
                             options=options)


# Layouts and labels.


def test_imagenet_layout_labels_index_the_sorted_class_names(tmp_path):
  images = imagenet_tree(tmp_path, {'train': ['zebra', 'ant', 'moose']})
  source = open_folder(tmp_path)
  assert source.class_names == ('ant', 'moose', 'zebra')
  assert source.num_examples == 6 and source.image_shape == (None, None, 3)
  ids = source.example_ids()
  assert ids == sorted(images)
  for path, example in zip(ids, decoded(source)):
    np.testing.assert_array_equal(example['image'], images[path])
    assert example['label'] == source.class_names.index(
        os.path.basename(os.path.dirname(path)))


def test_every_split_uses_the_train_splits_class_list(tmp_path):
  imagenet_tree(tmp_path, {'train': ['ant', 'bee', 'cat'],
                           'val': ['bee', 'cat']})
  workdir = tmp_path / 'run'
  val = open_folder(tmp_path, 'val', workdir=str(workdir))
  # 'ant' has no val images and still holds label 0.
  assert val.class_names == ('ant', 'bee', 'cat')
  assert [e['label'] for e in decoded(val)] == [1, 1, 2, 2]
  assert not (workdir / 'data_index').exists()  # Opening only reads.
  val.commit()  # The loop's call once the workdir exists.
  stored = json.loads((workdir / 'data_index' / 'class_names.json')
                      .read_text())
  assert stored == ['ant', 'bee', 'cat']
  os.makedirs(tmp_path / 'val' / 'dog')
  save(str(tmp_path / 'val' / 'dog' / 'x.png'), np.zeros((4, 4, 3), np.uint8))
  folder_index.forget_listings()
  with pytest.raises(DataError, match="split 'val' of folder:.* has class "
                     'folders that are not among the 3 classes of this run '
                     r'\(.*class_names.json\): dog'):
    open_folder(tmp_path, 'val', workdir=str(workdir))
  folder_index.forget_listings()
  with pytest.raises(DataError, match="3 classes of split 'train': dog"):
    open_folder(tmp_path, 'val')


def test_a_folder_without_split_subfolders_is_one_unlabelled_train_split(
    tmp_path):
  rng = np.random.default_rng(0)
  for path in ('a.png', 'deep/er/b.png', 'deep/c.png'):
    save(str(tmp_path / path), tiny(rng))
  source = open_folder(tmp_path)
  assert source.class_names is None and not source.labelled
  assert source.example_ids() == [str(tmp_path / p) for p in
                                  ('a.png', 'deep/c.png', 'deep/er/b.png')]
  assert [e['label'] for e in decoded(source)] == [-1, -1, -1]
  with pytest.raises(ConfigError, match="split 'test' of folder:.*: the "
                     'folder has no split subfolders .* one unlabelled split'):
    open_folder(tmp_path, 'test')


def test_a_split_subfolder_holding_images_itself_is_unlabelled(tmp_path):
  imagenet_tree(tmp_path, {'train': ['ant', 'bee']})
  rng = np.random.default_rng(1)
  for path in ('unlabelled/x.png', 'unlabelled/more/y.png'):
    save(str(tmp_path / path), tiny(rng))
  source = open_folder(tmp_path, 'unlabelled')
  assert source.class_names is None and source.num_examples == 2
  assert open_folder(tmp_path, 'train').class_names == ('ant', 'bee')
  with pytest.raises(ConfigError, match="split 'test' of folder:.*: no such "
                     'subfolder; its splits are train, unlabelled'):
    open_folder(tmp_path, 'test')


def test_folder_errors_are_one_line(tmp_path):
  with pytest.raises(DataError, match='folder:.*/nowhere: no such directory'):
    open_folder(tmp_path / 'nowhere')
  (tmp_path / 'empty' / 'train' / 'ant').mkdir(parents=True)
  (tmp_path / 'empty' / 'train' / 'ant' / 'readme.txt').write_text('hi')
  with pytest.raises(DataError, match=r"split 'train' of folder:.*: no image "
                     r'files \(.jpg .jpeg .png .bmp .gif\) under .*; ignored '
                     r'1 file \(.txt: 1\)'):
    open_folder(tmp_path / 'empty')
  with pytest.raises(ConfigError, match='max_bad_fraction=2 is invalid'):
    open_folder(tmp_path / 'empty', max_bad_fraction=2)
  with pytest.raises(ConfigError, match=r'split .*train\[:x\].*expected'):
    open_folder(tmp_path / 'empty', 'train[:x]')
  with pytest.raises(ConfigError, match="dataset 'folder:'"):
    sources.open_source('folder:', 'train')


# Files: every type and mode becomes RGB uint8.


def test_every_file_type_and_mode_decodes_to_rgb(tmp_path, photo):
  gray = np.asarray(Image.fromarray(photo).convert('L'))
  gray3 = np.repeat(gray[..., None], 3, axis=-1)
  rgba = np.dstack([photo, np.arange(photo[..., 0].size, dtype=np.uint8)
                    .reshape(photo.shape[:2])])
  palette = Image.fromarray(photo).quantize(64)
  frames = [palette, Image.fromarray(255 - photo).quantize(64)]
  exact = {  # Lossless files: TensorFlow's pixels must be these.
      'rgb.png': photo, 'upper.PNG': photo, 'gray.png': gray3,
      'rgba.png': rgba[..., :3], 'rgb.bmp': photo, 'rgba.bmp': photo,
      'palette.BMP': np.asarray(palette.convert('RGB')),
      'anim.gif': np.asarray(frames[0].convert('RGB')),
      'png_named.jpg': photo,
  }
  save(str(tmp_path / 'rgb.png'), photo)
  save(str(tmp_path / 'upper.PNG'), photo)
  save(str(tmp_path / 'gray.png'), gray)
  save(str(tmp_path / 'rgba.png'), rgba)
  # 16 bit: each 8-bit value v stored as v * 257 reads back as v.
  save(str(tmp_path / 'deep.png'),
       Image.fromarray(gray.astype(np.uint16) * 257))
  exact['deep.png'] = gray3
  assert Image.open(tmp_path / 'deep.png').mode == 'I;16'
  save(str(tmp_path / 'rgb.bmp'), photo)
  save(str(tmp_path / 'rgba.bmp'), rgba)  # 32 bit, read by TensorFlow.
  save(str(tmp_path / 'palette.BMP'), palette)
  frames[0].save(tmp_path / 'anim.gif', save_all=True,
                 append_images=frames[1:])
  save(str(tmp_path / 'png_named.jpg'), photo, 'PNG')
  lossy = {'photo.jpg': photo, 'gray.JPEG': gray3, 'cmyk.jpg': photo,
           'trailing_bytes.jpeg': photo}
  # 4:4:4 at quality 95: the pixels stay close to the photo's.
  jpeg = dict(quality=95, subsampling=0)
  save(str(tmp_path / 'photo.jpg'), photo, **jpeg)
  save(str(tmp_path / 'gray.JPEG'), gray, **jpeg)
  save(str(tmp_path / 'cmyk.jpg'), Image.fromarray(photo).convert('CMYK'),
       **jpeg)
  with open(tmp_path / 'trailing_bytes.jpeg', 'wb') as f:
    f.write((tmp_path / 'photo.jpg').read_bytes() + b'\0junk' * 10)

  source = open_folder(tmp_path)
  got = {os.path.basename(path): example['image'] for path, example in
         zip(source.example_ids(), decoded(source))}
  assert set(got) == set(exact) | set(lossy)
  for name, want in exact.items():
    assert got[name].dtype == np.uint8, name
    np.testing.assert_array_equal(got[name], want, err_msg=name)
  for name, want in lossy.items():
    error = np.abs(got[name].astype(int) - want)
    assert got[name].shape == want.shape and error.mean() < 3, name
    # PIL's decode of the same file: the same up to its IDCT's rounding.
    pil = np.asarray(Image.open(tmp_path / name).convert('RGB'))
    assert np.abs(got[name].astype(int) - pil).mean() < 2, name
  # CMYK goes through PIL, whose Adobe CMYK conversion is the reference.
  np.testing.assert_array_equal(
      got['cmyk.jpg'], np.asarray(Image.open(tmp_path / 'cmyk.jpg')
                                  .convert('RGB')))
  assert source.bad_files() == {}


def test_byte_checks_route_each_file(photo):
  def encoded(image, fmt, **kwargs):
    out = io.BytesIO()
    Image.fromarray(photo).convert(image).save(out, fmt, **kwargs)
    return out.getvalue()

  jpeg, cmyk = encoded('RGB', 'JPEG'), encoded('CMYK', 'JPEG')
  assert image_bytes.jpeg_frame(jpeg)[1:] == (8, 3)
  assert image_bytes.jpeg_frame(cmyk)[1:] == (8, 4)
  assert image_bytes.jpeg_frame(encoded('L', 'JPEG'))[1:] == (8, 1)
  # Good files pass through untouched: no decode, no copy.
  for data in (jpeg, encoded('RGB', 'PNG'), encoded('RGB', 'BMP'),
               encoded('P', 'GIF')):
    assert image_bytes.for_tensorflow(data)[0] is data
  # Truncated files of every type are bad, with a reason.
  for data in (jpeg, encoded('RGB', 'PNG'), encoded('RGB', 'BMP'),
               encoded('P', 'GIF')):
    kept, why = image_bytes.for_tensorflow(data[:len(data) * 2 // 3])
    assert kept is None and why.startswith('damaged '), why
  assert image_bytes.for_tensorflow(b'') == (None, 'empty file')
  assert image_bytes.for_tensorflow(b'<html>')[1].startswith('not a JPEG')


def test_other_files_are_ignored_and_counted(tmp_path):
  rng = np.random.default_rng(0)
  save(str(tmp_path / 'a.png'), tiny(rng))
  save(str(tmp_path / 'sub' / 'b.gif'), tiny(rng))
  for name in ('notes.txt', 'sub/labels.csv', '.DS_Store', '._a.png',
               'sub/README'):
    (tmp_path / name).write_bytes(b'x')
  source = open_folder(tmp_path)
  assert source.num_examples == 2 and source.num_ignored == 5
  listing = folder_listing.list_tree(str(tmp_path))
  assert dict(listing.ignored) == {'.txt': 1, '.csv': 1, '(hidden)': 2,
                                   '(no extension)': 1}


def test_listing_stops_at_symlink_loops(tmp_path):
  rng = np.random.default_rng(0)
  save(str(tmp_path / 'a' / 'x.png'), tiny(rng))
  os.symlink(tmp_path, tmp_path / 'a' / 'loop')
  assert folder_listing.list_tree(str(tmp_path)).images == ['a/x.png']


def test_directory_links_inside_the_dataset_are_ignored_and_said(
    tmp_path, caplog):
  """A link to the dataset root (which once added the test images to train
  as a class), to another split and back into the split are not followed
  but counted as ignored; a link out of the dataset (another disk) is."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'data'
  for path in ('train/0/a.png', 'train/1/b.png', 'test/0/c.png',
               'test/1/d.png'):
    save(str(root / path), tiny(rng))
  outside = tmp_path / 'other_disk'
  save(str(outside / 'e.png'), tiny(rng))
  os.symlink(root, root / 'train' / '1' / 'whole_dataset')
  os.symlink(root / 'test', root / 'train' / '0' / 'test_split')
  os.symlink(root / 'train' / '0', root / 'train' / '1' / 'same_split')
  os.symlink(outside, root / 'train' / '0' / 'more')
  listing = folder_listing.list_tree(str(root / 'train'),
                                     dataset_root=str(root))
  assert listing.images == ['0/a.png', '0/more/e.png', '1/b.png']
  assert listing.ignored == {'(directory link)': 3}
  with caplog.at_level('WARNING'):
    source = open_folder(root)
  assert source.num_examples == 3 and source.class_names == ('0', '1')
  assert '(directory link): 3' in caplog.text


def test_a_remote_folder_that_cannot_be_listed_says_what_was_tried():
  with pytest.raises(DataError, match=r"folder:ram://nothing_here: no such "
                     r"directory \(tf.io.gfile found nothing there"):
    open_folder('ram://nothing_here')
  # A scheme this TensorFlow has no file system for: what it said.
  with pytest.raises(DataError, match=r"folder:nope://bucket/x: cannot reach "
                     r"it through tf.io.gfile \(\w+Error: "):
    open_folder('nope://bucket/x')


def test_remote_paths_go_through_gfile(photo):
  # TensorFlow's in-memory file system stands in for gs://.
  root = 'ram://folder_test'
  for path in ('train/ant/a.png', 'train/bee/b.png'):
    tf.io.gfile.makedirs(os.path.dirname(f'{root}/{path}'))
    with tf.io.gfile.GFile(f'{root}/{path}', 'wb') as f:
      f.write(tf.io.encode_png(photo).numpy())
  source = open_folder(root, workdir='ram://folder_test_run')
  assert source.class_names == ('ant', 'bee')
  assert source.example_ids() == [f'{root}/train/ant/a.png',
                                  f'{root}/train/bee/b.png']
  examples = decoded(source)
  np.testing.assert_array_equal(examples[1]['image'], photo)
  assert [e['label'] for e in examples] == [0, 1]
  source.commit()
  assert tf.io.gfile.exists('ram://folder_test_run/data_index/train.json')
