"""Data tools on real files: split determinism and validation, the demo
generator, and ppdet's VOC reader consuming what we write."""
import filecmp
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from detdistill.errors import VOCDataError
from detdistill.data.demo import DEMO_CLASSES, make_demo_voc
from detdistill.data.voc import parse_voc_xml, split_voc, validate_voc_list

LISTS = ['trainval.txt', 'test.txt', 'label_list.txt', 'unlabeled.txt']
IMG = 'VOCdevkit/VOC2012/JPEGImages'
ANN = 'VOCdevkit/VOC2012/Annotations'


@pytest.fixture
def voc(tmp_path, demo_voc):
    """A private copy of the demo images and XML, without lists."""
    root = tmp_path / 'voc'
    shutil.copytree(os.path.join(demo_voc, 'VOCdevkit'), root / 'VOCdevkit')
    return str(root)


def test_split_is_deterministic_and_exact(voc, tmp_path):
    other = str(tmp_path / 'other')
    shutil.copytree(voc, other)
    a = split_voc(voc, ratio=0.75, seed=3, unlabeled=4)
    split_voc(other, ratio=0.75, seed=3, unlabeled=4)
    for name in LISTS:
        assert filecmp.cmp(os.path.join(voc, name), os.path.join(other, name),
                           shallow=False), name
    assert a['images'] == {'trainval': 27, 'test': 9, 'unlabeled': 4}
    lines = open(os.path.join(voc, 'trainval.txt')).read().split('\n')[0]
    img, xml = lines.split()
    assert img.startswith(IMG + '/') and xml.startswith(ANN + '/')
    # every image lands in exactly one list
    seen = [ln.split()[0] for n in ('trainval.txt', 'test.txt', 'unlabeled.txt')
            for ln in open(os.path.join(voc, n)) if ln.strip()]
    assert len(seen) == len(set(seen)) == 40
    split_voc(other, ratio=0.75, seed=4, unlabeled=4, overwrite=True)
    assert not filecmp.cmp(os.path.join(voc, 'trainval.txt'),
                           os.path.join(other, 'trainval.txt'), shallow=False)


def test_split_refuses_to_overwrite(voc):
    split_voc(voc)
    with pytest.raises(VOCDataError, match='trainval.txt exists'):
        split_voc(voc)


def _first(voc, sub, ext):
    d = os.path.join(voc, sub)
    return os.path.join(d, sorted(f for f in os.listdir(d)
                                  if f.endswith(ext))[0])


def test_bad_files_are_named(voc):
    jpg = _first(voc, IMG, '.jpg')
    with open(jpg, 'rb') as f:
        data = f.read()
    with open(jpg, 'wb') as f:  # a truncated JPEG
        f.write(data[:len(data) // 3])
    xmls = sorted(os.listdir(os.path.join(voc, ANN)))
    bad_xml = os.path.join(voc, ANN, xmls[1])
    with open(bad_xml, 'w') as f:
        f.write('<annotation><size><width>10</width>')
    unknown = os.path.join(voc, ANN, xmls[2])
    text = open(unknown).read()
    name = parse_voc_xml(unknown)['objects'][0]['name']
    with open(unknown, 'w') as f:
        f.write(text.replace('<name>{}</name>'.format(name),
                             '<name>hexagon</name>', 1))
    os.remove(os.path.join(voc, ANN, xmls[3]))
    labels = os.path.join(voc, 'classes.txt')
    with open(labels, 'w') as f:
        f.write('\n'.join(DEMO_CLASSES))
    with pytest.raises(VOCDataError) as e:
        split_voc(voc, label_list=labels)
    msg = str(e.value)
    assert '4 problem(s)' in msg
    assert os.path.basename(jpg) in msg and 'cannot decode' in msg
    assert xmls[1] in msg and 'malformed XML' in msg
    assert xmls[2] in msg and "unknown class 'hexagon'" in msg
    assert xmls[3] in msg and 'not found' in msg


def test_validate_list_reports_every_problem(demo_voc, tmp_path):
    lst = tmp_path / 'list.txt'
    good = open(os.path.join(demo_voc, 'trainval.txt')).readline()
    lst.write_text(good + 'JPEGImages/nope.jpg Annotations/nope.xml\n'
                   'just-one-field\n')
    report = validate_voc_list(demo_voc, str(lst), os.path.join(
        demo_voc, 'label_list.txt'))
    assert report.num_images == 1 and len(report.problems) == 2
    with pytest.raises(VOCDataError, match='nope.jpg'):
        report.raise_if_problems()


def test_xml_fields_are_named(tmp_path):
    p = tmp_path / 'a.xml'
    p.write_text('<annotation><size><width>9</width><height>9</height></size>'
                 '<object><name>circle</name><bndbox><xmin>5</xmin><ymin>1'
                 '</ymin><xmax>x</xmax><ymax>3</ymax></bndbox></object>'
                 '</annotation>')
    with pytest.raises(VOCDataError, match=r'a.xml: <xmax> is not a number'):
        parse_voc_xml(str(p))


def test_cli_error_is_one_line(voc):
    split_voc(voc)
    r = subprocess.run([sys.executable, 'tools/split_voc.py', '--dataset_dir',
                        voc], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert 'Traceback' not in r.stderr and 'exists' in r.stderr


def test_demo_is_deterministic(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    make_demo_voc(a, num_images=6, seed=5)
    make_demo_voc(b, num_images=6, seed=5)
    for sub in (IMG + '/demo_00003.jpg', ANN + '/demo_00005.xml',
                'trainval.txt'):
        assert filecmp.cmp(os.path.join(a, sub), os.path.join(b, sub),
                           shallow=False)


def test_default_demo_dataset_has_the_pinned_content(tmp_path):
    """The benchmark's data is a fact, not an assumption: the default demo
    dataset's bytes (images, XML, lists) hash to the committed digest. If
    this fails on another machine, its numpy/OpenCV write other data and
    demo results are not comparable with the README's."""
    from detdistill.data.demo import DEMO_DIGEST, dataset_digest
    out = str(tmp_path / 'demo')
    make_demo_voc(out)
    assert dataset_digest(out) == DEMO_DIGEST
    # the benchmark's half-label lists are derived from these files: the
    # same data, the same digest; a changed list is a different dataset
    from bench.splits import write_half_split
    write_half_split(out)
    assert sorted(f for f in os.listdir(out) if 'half' in f) == [
        'trainval_half.txt', 'unlabeled_half.txt']
    assert dataset_digest(out) == DEMO_DIGEST
    with open(os.path.join(out, 'test.txt'), 'a') as f:
        f.write('\n')
    assert dataset_digest(out) != DEMO_DIGEST


def test_demo_round_trips_through_ppdet_reader(demo_voc):
    from ppdet.data.source.voc import VOCDataSet
    ds = VOCDataSet(dataset_dir=demo_voc, image_dir='',
                    anno_path='trainval.txt', label_list='label_list.txt',
                    data_fields=['image', 'gt_bbox', 'gt_class', 'difficult'])
    ds.parse_dataset()
    assert len(ds.roidbs) == 32
    names = open(os.path.join(demo_voc, 'label_list.txt')).read().split()
    assert names == DEMO_CLASSES
    sizes, classes = [], set()
    for rec in ds.roidbs:
        xml = os.path.join(demo_voc, ANN, os.path.basename(
            rec['im_file']).replace('.jpg', '.xml'))
        ann = parse_voc_xml(xml)
        assert [[o['bbox'][0], o['bbox'][1], o['bbox'][2], o['bbox'][3]]
                for o in ann['objects']] == rec['gt_bbox'].tolist()
        assert [names.index(o['name']) for o in ann['objects']] == \
            rec['gt_class'].ravel().tolist()
        classes.update(o['name'] for o in ann['objects'])
        sizes += [o['bbox'][2] - o['bbox'][0] for o in ann['objects']]
    assert classes == set(DEMO_CLASSES)
    assert min(sizes) < 20 and max(sizes) > 45  # varied scale


def test_xml_must_agree_with_its_image(voc):
    """A <size> that is not the image's, or a box wholly outside it, stops
    the split with both files named; a box overhanging the border and an
    image without objects are notes (ppdet's reader clips / skips them)."""
    xmls = sorted(os.listdir(os.path.join(voc, ANN)))

    def edit(name, old, new):
        path = os.path.join(voc, ANN, name)
        text = open(path).read()
        assert old in text
        with open(path, 'w') as f:
            f.write(text.replace(old, new, 1))

    ann = parse_voc_xml(os.path.join(voc, ANN, xmls[0]))
    edit(xmls[0], '<width>{}</width>'.format(int(ann['width'])),
         '<width>{}</width>'.format(int(ann['width']) + 7))
    ann = parse_voc_xml(os.path.join(voc, ANN, xmls[1]))
    x1 = int(ann['objects'][0]['bbox'][0])
    x2 = int(ann['objects'][0]['bbox'][2])
    edit(xmls[1], '<xmin>{}</xmin>'.format(x1), '<xmin>{}</xmin>'.format(
        int(ann['width']) + 5))
    edit(xmls[1], '<xmax>{}</xmax>'.format(x2), '<xmax>{}</xmax>'.format(
        int(ann['width']) + 30))
    with pytest.raises(VOCDataError) as e:
        split_voc(voc)
    msg = str(e.value)
    assert '2 problem(s)' in msg
    assert xmls[0] in msg and '<size> says {}x'.format(
        int(parse_voc_xml(os.path.join(voc, ANN, xmls[0]))['width'])) in msg
    assert xmls[0].replace('.xml', '.jpg') in msg
    assert xmls[1] in msg and 'object 0' in msg and 'lies outside' in msg

    # Repair those two; add an overhang and an image without objects.
    shutil.copy(os.path.join(voc, ANN, xmls[2]), os.path.join(voc, ANN,
                                                              xmls[0]))
    shutil.copy(os.path.join(voc, IMG, xmls[2].replace('.xml', '.jpg')),
                os.path.join(voc, IMG, xmls[0].replace('.xml', '.jpg')))
    shutil.copy(os.path.join(voc, ANN, xmls[2]), os.path.join(voc, ANN,
                                                              xmls[1]))
    shutil.copy(os.path.join(voc, IMG, xmls[2].replace('.xml', '.jpg')),
                os.path.join(voc, IMG, xmls[1].replace('.xml', '.jpg')))
    ann = parse_voc_xml(os.path.join(voc, ANN, xmls[3]))
    edit(xmls[3], '<xmax>{}</xmax>'.format(int(ann['objects'][0]['bbox'][2])),
         '<xmax>{}</xmax>'.format(int(ann['width']) + 12))
    path = os.path.join(voc, ANN, xmls[4])
    text = open(path).read()
    with open(path, 'w') as f:
        f.write(text[:text.index('  <object>')] + '</annotation>\n')
    summary = split_voc(voc)
    notes = summary['notes']
    assert notes.startswith('2 note(s)')
    assert xmls[3] in notes and 'extends beyond' in notes and 'clips' in notes
    assert xmls[4] in notes and 'no <object>' in notes


def test_two_images_for_one_annotation_are_an_error(voc):
    """x.jpg beside x.png: which image x.xml labels is ambiguous. Both files
    are named, for every such stem; a non-image file beside an image (x.txt)
    is not an image and is ignored."""
    from PIL import Image
    stems = sorted(os.path.splitext(f)[0]
                   for f in os.listdir(os.path.join(voc, IMG)))
    for stem, ext in ((stems[0], '.png'), (stems[5], '.jpeg')):
        Image.open(os.path.join(voc, IMG, stem + '.jpg')).save(
            os.path.join(voc, IMG, stem + ext))
    with open(os.path.join(voc, IMG, stems[7] + '.txt'), 'w') as f:
        f.write('notes about this image, not an image\n')
    with pytest.raises(VOCDataError) as e:
        split_voc(voc)
    msg = str(e.value)
    assert '2 problem(s)' in msg
    for stem, ext in ((stems[0], '.png'), (stems[5], '.jpeg')):
        assert os.path.join(voc, IMG, stem + '.jpg') in msg
        assert os.path.join(voc, IMG, stem + ext) in msg
        assert '{}.xml'.format(stem) in msg
    os.remove(os.path.join(voc, IMG, stems[0] + '.png'))
    os.remove(os.path.join(voc, IMG, stems[5] + '.jpeg'))
    summary = split_voc(voc, ratio=1.0)
    assert summary['images']['trainval'] == 40
    lines = open(os.path.join(voc, 'trainval.txt')).read().splitlines()
    assert '{}/{}.jpg {}/{}.xml'.format(IMG, stems[7], ANN, stems[7]) in lines


@pytest.mark.parametrize('profile', ['converged', 'converged_b'])
def test_benchmark_profile_datasets_have_the_pinned_content(tmp_path,
                                                            profile):
    """The converged benchmarks' datasets, written by the command their
    catalogue profile names (what tools/benchmark.py runs), hash to their
    committed digests."""
    from conftest import run_tool
    from bench.catalogue import catalogue
    from detdistill.data.demo import PINNED_DIGESTS, dataset_digest
    out = str(tmp_path / profile)
    cmd = [a.replace('{dataset_dir}', out)
           for a in catalogue().profiles[profile].make_data]
    r = run_tool(cmd, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert dataset_digest(out) == PINNED_DIGESTS[profile]
    labels = open(os.path.join(out, 'label_list.txt')).read().split()
    assert len(labels) == (6 if profile == 'converged' else 4)


def _bccd_copy(tmp_path):
    """The vendored BCCD photos (dataset/bccd), annotations copied (to edit
    them) and images linked, in a folder the split can write to."""
    from conftest import ROOT
    src = os.path.join(ROOT, 'dataset', 'bccd')
    out = tmp_path / 'bccd'
    shutil.copytree(os.path.join(src, 'Annotations'), out / 'Annotations')
    os.symlink(os.path.join(src, 'JPEGImages'), out / 'JPEGImages')
    return str(out)


def test_real_photos_with_zero_size_boxes_split_and_list_them(tmp_path):
    """BCCD (real microscope photos) has two zero-size boxes, which
    PaddleDetection's reader skips: the split goes on, skips them too and
    names both; the counts are the dataset's minus those two."""
    voc = _bccd_copy(tmp_path)
    summary = split_voc(voc, ratio=0.8, seed=0, image_dir='JPEGImages',
                        anno_dir='Annotations')
    assert summary['images'] == {'trainval': 291, 'test': 73,
                                 'unlabeled': 0}
    assert summary['classes'] == ['Platelets', 'RBC', 'WBC']
    total = {n: summary['trainval'][n] + summary['test'][n]
             for n in summary['classes']}
    assert total == {'Platelets': 361, 'RBC': 4155 - 2, 'WBC': 372}
    notes = summary['notes']
    assert notes.startswith('2 note(s)')
    for xml, obj, box in (('BloodImage_00338', 12, '[504, 337, 504, 337]'),
                          ('BloodImage_00343', 3, '[181, 329, 181, 329]')):
        assert '{}.xml: object {} (RBC) <bndbox> {} has zero size; ' \
            'skipped'.format(os.path.join(voc, 'Annotations', xml), obj,
                             box) in notes


def test_a_box_with_swapped_corners_is_an_error(tmp_path):
    """xmax < xmin is a mistake to fix, not a box to drop."""
    voc = _bccd_copy(tmp_path)
    path = os.path.join(voc, 'Annotations', 'BloodImage_00000.xml')
    text = open(path).read()
    start = text.index('<xmin>')
    xmin = text[start:text.index('</xmin>')].split('>')[1]
    xmax = text[text.index('<xmax>'):text.index('</xmax>')].split('>')[1]
    text = text.replace('<xmin>{}</xmin>'.format(xmin),
                        '<xmin>{}</xmin>'.format(xmax), 1).replace(
        '<xmax>{}</xmax>'.format(xmax), '<xmax>{}</xmax>'.format(xmin), 1)
    with open(path, 'w') as f:
        f.write(text)
    with pytest.raises(VOCDataError) as e:
        split_voc(voc, image_dir='JPEGImages', anno_dir='Annotations')
    assert '1 problem(s)' in str(e.value)
    assert '{}: object 0 (WBC) <bndbox> [{}, '.format(path, xmax) in \
        str(e.value)
    assert 'has xmax < xmin or ymax < ymin' in str(e.value)
