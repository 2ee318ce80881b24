"""Usage: driver.py PYTHON EXPORT_ROOT LABEL [--time]
Runs infer_one.py in subprocesses for each variant and compares outputs."""
import subprocess, sys, os, numpy as np
py, root, label = sys.argv[1:4]
do_time = '--time' in sys.argv
S = '/tmp/pp_versions/scripts/infer_one.py'
env = dict(os.environ, PYTHONPATH='/work/main', OMP_NUM_THREADS='1')
variants = [('plain', []), ('mkldnn', []),
            ('mkldnn', ['--delete', 'conv_activation_onednn_fuse_pass']),
            ('mkldnn_int8', [])]
def cmp(a, b):
    A, B = np.load(a), np.load(b)
    r = []
    for k in sorted(A.files):
        x, y = A[k], B[k]
        r.append('%s%s' % (k, 'shape %s vs %s' % (x.shape, y.shape) if x.shape != y.shape
                 else ' max|d|=%.3g' % (np.abs(x.astype('float64') - y).max() if x.size else 0)))
    return ', '.join(r)
for sub in ('nonms', 'nms'):
    md = os.path.join(root, sub)
    for mode, extra in variants:
        tag = '%s-%s-%s%s' % (label, sub, mode, '-nofuse' if extra else '')
        out = '/tmp/pp_versions/out/%s.npz' % tag
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = ['nice', '-n', '10', py, S, md, mode, out] + extra + (['--time'] if do_time else [])
        try:
            p = subprocess.run(cmd, cwd='/work/main', env=env, capture_output=True, text=True, timeout=600)
            rc, so, se = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired:
            rc, so, se = 'TIMEOUT', '', ''
        with open('/tmp/pp_versions/out/%s.log' % tag, 'w') as f:
            f.write('CMD %s\nRC %s\n--stdout\n%s\n--stderr\n%s' % (' '.join(cmd), rc, so, se))
        print('==', tag, 'rc', rc)
        for l in so.splitlines():
            if l.startswith(('RAN', 'TIME')): print('  ', l)
        if rc != 0:
            import re
            txt = re.sub(r'\x1b\[[0-9;]*m', '', so + se)
            passes = [l for l in txt.splitlines() if 'Running PIR pass' in l]
            if passes: print('   last pass:', passes[-1].strip())
            lines = txt.splitlines()
            frames = [l for l in lines if re.match(r'^\d+\s+\S', l)]
            if frames: print('   top frames:', ' | '.join(f.strip()[:120] for f in frames[-3:]))
            errs = [l for l in lines if any(w in l for w in ('Error', 'SIGSEGV', 'not support', 'Aborted'))]
            for l in errs[-4:]: print('   !', l.strip()[:300])
        else:
            print('   vs ref(dygraph):', cmp(out, os.path.join(md, 'ref.npz')))
            if mode != 'plain':
                print('   vs plain:', cmp(out, '/tmp/pp_versions/out/%s-%s-plain.npz' % (label, sub)))
        sys.stdout.flush()
