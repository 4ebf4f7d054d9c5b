import numpy as np, cv2, sys
import importlib.util as u; s=u.spec_from_file_location("rz","/work/wt/deepcell/redis_consumer/deepcell/resize.py"); m=u.module_from_spec(s); s.loader.exec_module(m); resize=m.resize

rng = np.random.default_rng(0)
worst = 0; worstn = 0
for (sx, sy, dx, dy) in [(100,100,50,50),(101,77,63,120),(256,256,394,394),(1000,1000,769,769),(33,40,40,33),(64,64,32,32),(10,13,97,5),(500,300,1000,600)]:
    x = (rng.random((1, sx, sy, 1), dtype=np.float32) * 1000).astype(np.float32)
    ref = cv2.resize(x[0,...,0], (dy, dx), interpolation=cv2.INTER_LINEAR)
    ours = resize(x, (dx, dy))[0,...,0]
    d = np.abs(ref-ours).max(); worst = max(worst, d / 1000)
    lab = rng.integers(0, 50, (1, sx, sy, 1)).astype(np.int32)
    refn = cv2.resize(lab[0,...,0], (dy, dx), interpolation=cv2.INTER_NEAREST)
    n = (refn != resize(lab, (dx, dy), labeled_image=True)[0,...,0]).sum(); worstn = max(worstn, n)
    print(sx, sy, dx, dy, 'linear maxabs/range', d/1000, 'nearest mismatches', n)
print('worst rel', worst, 'nearest', worstn)
