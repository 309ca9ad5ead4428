"""Poster similarity: the Beam pipelines and the parts they share.

faiss' OpenMP threads wait passively between parallel regions (`OMP_WAIT_POLICY=PASSIVE`, unless the environment
sets a policy): with libgomp's default each idle thread spins for a while after every region, so many small
searches (a DoFn's per-title or per-user queries, the recall and evaluation queries) burnt most of their CPU in
spinning threads, CPU the runner's own threads need (and on Dataflow the other SDK processes of the machine):
160 one-title searches of a 160-vector IDMap2,Flat took 1.2 CPU s on 2 threads spinning, 0.014 s waiting passively
(same answers; big batches are unaffected). libgomp reads the policy when faiss loads, so it is set here, in the
package that every command, test and Beam worker imports before any of its modules imports faiss.
"""
import atexit
import gc
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Python's last garbage collection at exit walks every object TensorFlow, Beam and faiss made: ~1.5 s of CPU after a
# command's work is done (4 s in a test worker), for memory the OS frees anyway. atexit handlers run before it, so
# the objects are frozen there (`gc.freeze`), out of its reach. Only cyclic garbage left at exit goes uncollected,
# which Python does not promise to finalise at exit either. Not where duckdb is loaded (the tests that read outputs
# with it): its bindings (nanobind) print every object left at exit as a leak.
def _freeze_at_exit() -> None:
    if "duckdb" not in sys.modules:
        gc.freeze()


atexit.register(_freeze_at_exit)
