# Kiln's Python fork server. Only the server's interpreter sees this file: Kiln starts
# `python3 -B main.py` with this file in the user site directory of the server's private root
# (~/.local/lib/pythonX.Y/site-packages, which no pod has), so `site` imports it at the very end
# of the interpreter's start-up, just before the script would run. The import of _kiln_pyfork
# (Kiln's own library) then serves forks and never returns in the server; it returns, by raising,
# in each program's process, which has by then entered its pod and locked itself down. What
# follows removes every trace of the server, and the interpreter goes on to run the program's
# main.py exactly as a freshly started `python3 -B main.py` would.
import sys

_had_gc = "gc" in sys.modules
import gc
import os

_here = os.path.dirname(os.path.abspath(__file__))
# Start-up objects leave the collector's generations for good: collections in a program's
# process never touch (and so never copy) their pages.
gc.freeze()
try:
    import _kiln_pyfork
except ImportError as e:
    if str(e) != "kiln: program process":
        sys.stderr.write("kiln fork server: %s\n" % e)
        sys.stderr.flush()
        os._exit(3)
    del e
# A __main__ of this process's own (not frozen), so that the final collection frees the
# program's globals and runs their finalizers as in a bare run.
_main = type(sys)("__main__")
_main.__dict__.update(sys.modules["__main__"].__dict__)
sys.modules["__main__"] = _main
del _main
while _here in sys.path:
    sys.path.remove(_here)
sys.path_importer_cache.pop(_here, None)
if not _had_gc:
    sys.modules.pop("gc", None)
# As in a bare start, where no usercustomize exists: `site` ignores this error.
raise ImportError("no usercustomize", name="usercustomize")
