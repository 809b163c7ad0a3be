//! A forked program's exit without tearing down the interpreter it inherited.
//!
//! A bare `python3 main.py` ends in `Py_FinalizeEx`: threads are joined, atexit handlers run,
//! then every module is cleared and every object freed. In a process forked from the server,
//! almost all of those objects are the server's start-up state, shared copy-on-write with the
//! server: clearing them writes to (and so copies) well over a thousand pages, most of a
//! `print(1)` job's CPU. Nothing of that is observable by the program; what is observable is
//! kept, in the same order: non-daemon threads joined, atexit handlers, the program's own
//! `__main__` freed with a full collection (its finalizers and unclosed files), stdout and
//! stderr flushed, and the exit status (`sys.exit`, an uncaught exception, a failed flush = 120)
//! which the caller of `Py_FinalizeEx` (`Py_RunMain`, `Py_Exit`) still computes.
//!
//! In the program's process only, `Py_FinalizeEx`'s entry is replaced by a jump to
//! `kiln_finalize` (x86-64). When anything needed is missing, the program keeps the full
//! finalisation: slower, never different.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::sync::OnceLock;

/// What the program's process runs in place of the interpreter's teardown; leaves `status` 0,
/// or -1 when flushing stdout or stderr failed (CPython then exits 120).
const FINISH: &CStr = c"
status = 0
def _finish():
    global status
    import sys
    threading = sys.modules.get('threading')
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    import atexit
    atexit._run_exitfuncs()
    main = sys.modules.pop('__main__', None)
    del main
    # The program's own imports go too, newest first; what the server had loaded stays.
    for name in reversed(list(sys.modules)):
        if name not in preloaded:
            sys.modules.pop(name, None)
    import gc
    gc.collect()
    for name in ('stdout', 'stderr'):
        f = getattr(sys, name, None)
        if f is None or getattr(f, 'closed', False):
            continue
        try:
            f.flush()
        except Exception as e:
            status = -1
            try:
                sys.stderr.write('Exception ignored in: %r\\n%s: %s\\n' % (f, type(e).__name__, e))
            except Exception:
                pass
_finish()
del _finish
";

/// `Py_file_input`: a module's worth of statements.
const FILE_INPUT: c_int = 257;

struct Api {
    compile: unsafe extern "C" fn(*const c_char, *const c_char, c_int) -> *mut c_void,
    eval: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> *mut c_void,
    dict_new: unsafe extern "C" fn() -> *mut c_void,
    dict_set: unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void) -> c_int,
    dict_get: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void,
    builtins: unsafe extern "C" fn() -> *mut c_void,
    as_long: unsafe extern "C" fn(*mut c_void) -> c_long,
    print: unsafe extern "C" fn(),
    decref: unsafe extern "C" fn(*mut c_void),
}

/// What the server prepares once and every program's process inherits: the C API, `FINISH`
/// compiled, and the globals it runs in, where `preloaded` names the modules the server had
/// loaded (left standing at a program's end; the program's own imports are freed).
struct Prepared {
    api: Api,
    code: *mut c_void,
    globals: *mut c_void,
}

// Python objects, only ever touched with the GIL held.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

const SNAPSHOT: &CStr = c"import sys\npreloaded = frozenset(sys.modules)\ndel sys\n";

unsafe fn sym<T>(name: &CStr) -> Option<T> {
    let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
    (!p.is_null()).then(|| std::mem::transmute_copy::<*mut c_void, T>(&p))
}

unsafe fn find() -> Option<Api> {
    Some(Api {
        compile: sym(c"Py_CompileString")?,
        eval: sym(c"PyEval_EvalCode")?,
        dict_new: sym(c"PyDict_New")?,
        dict_set: sym(c"PyDict_SetItemString")?,
        dict_get: sym(c"PyDict_GetItemString")?,
        builtins: sym(c"PyEval_GetBuiltins")?,
        as_long: sym(c"PyLong_AsLong")?,
        print: sym(c"PyErr_Print")?,
        decref: sym(c"Py_DecRef")?,
    })
}

/// In place of `Py_FinalizeEx`, with the GIL held, once.
extern "C" fn kiln_finalize() -> c_int {
    let Some(Prepared { api, code, globals }) = PREPARED.get() else {
        return -1;
    };
    let (code, globals) = (*code, *globals);
    unsafe {
        let done = (api.eval)(code, globals, globals);
        if done.is_null() {
            // An exception out of an atexit handler is printed by atexit itself; this is only
            // what escaped the finishing code (a KeyboardInterrupt during a thread's join).
            (api.print)();
            return -1;
        }
        (api.decref)(done);
        let status = (api.dict_get)(globals, c"status".as_ptr());
        if status.is_null() {
            0
        } else {
            (api.as_long)(status) as c_int
        }
    }
}

/// In the server, once: finds the C API and compiles the finish. Without them programs keep
/// the full teardown.
///
/// # Safety
/// With the GIL held.
pub(super) unsafe fn prepare() {
    let Some(api) = find() else { return };
    let globals = (api.dict_new)();
    if globals.is_null() {
        return;
    }
    (api.dict_set)(globals, c"__builtins__".as_ptr(), (api.builtins)());
    let snapshot = (api.compile)(SNAPSHOT.as_ptr(), c"<kiln>".as_ptr(), FILE_INPUT);
    let code = (api.compile)(FINISH.as_ptr(), c"<kiln>".as_ptr(), FILE_INPUT);
    if snapshot.is_null() || code.is_null() {
        (api.print)();
        return;
    }
    let done = (api.eval)(snapshot, globals, globals);
    if done.is_null() {
        (api.print)();
        return;
    }
    (api.decref)(done);
    (api.decref)(snapshot);
    let _ = PREPARED.set(Prepared { api, code, globals });
}

/// Points `Py_FinalizeEx` at `kiln_finalize` in this process. False (and nothing changed) when
/// the server could not prepare the finish or the code cannot be patched.
///
/// # Safety
/// In the program's process, single-threaded, before the program runs.
pub(super) unsafe fn install() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if PREPARED.get().is_none() {
            return false;
        }
        let Some(target): Option<*mut u8> = sym(c"Py_FinalizeEx") else {
            return false;
        };
        // movabs rax, kiln_finalize; jmp rax
        let mut jump = [0u8; 12];
        jump[0] = 0x48;
        jump[1] = 0xb8;
        jump[2..10].copy_from_slice(&(kiln_finalize as *const () as u64).to_le_bytes());
        jump[10] = 0xff;
        jump[11] = 0xe0;
        let page = 4096usize;
        let start = (target as usize) & !(page - 1);
        let len = (target as usize + jump.len()) - start;
        let rw = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
        if libc::mprotect(start as *mut c_void, len, rw) != 0 {
            return false;
        }
        std::ptr::copy_nonoverlapping(jump.as_ptr(), target, jump.len());
        libc::mprotect(start as *mut c_void, len, libc::PROT_READ | libc::PROT_EXEC);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
