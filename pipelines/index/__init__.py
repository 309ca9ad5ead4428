"""`posters index` and the faiss parts the other stages share.

faiss' OpenMP threads wait passively between parallel regions (`OMP_WAIT_POLICY=PASSIVE`, unless the environment
sets a policy): with libgomp's default each idle thread spins for a while after every region, so many small
searches (a DoFn's per-title or per-user queries, the recall and evaluation queries) burnt most of their CPU in
spinning threads, CPU the runner's own threads need: 160 one-title searches of a 160-vector IDMap2,Flat took
1.2 CPU s on 2 threads spinning, 0.014 s waiting passively (same answers; big batches are unaffected). libgomp
reads the policy when faiss loads, so it is set here, before any module of this package imports faiss; the
packages that import faiss outside it (`pipelines.candidates`, `pipelines.bench`) import this one first.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
