//! The few CPython C API functions the server calls, found in the running interpreter (which
//! exports them for extension modules): no Python headers or libpython needed to build Kiln.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// The CPython functions the server calls, found in the running interpreter.
pub(super) struct Python {
    pub(super) before_fork: unsafe extern "C" fn(),
    pub(super) after_fork_parent: unsafe extern "C" fn(),
    pub(super) after_fork_child: unsafe extern "C" fn(),
    pub(super) set_string: unsafe extern "C" fn(*mut c_void, *const c_char),
    pub(super) import_error: *mut *mut c_void,
    pub(super) sys_get: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    pub(super) decode: unsafe extern "C" fn(*const c_char) -> *mut c_void,
    pub(super) list_append: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    pub(super) dec_ref: unsafe extern "C" fn(*mut c_void),
}

impl Python {
    pub(super) fn find() -> Result<Python, String> {
        unsafe fn sym(name: &CStr) -> Result<*mut c_void, String> {
            let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
            if p.is_null() {
                Err(format!("{} not found", name.to_string_lossy()))
            } else {
                Ok(p)
            }
        }
        unsafe {
            Ok(Python {
                before_fork: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_BeforeFork",
                )?),
                after_fork_parent: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_AfterFork_Parent",
                )?),
                after_fork_child: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(sym(
                    c"PyOS_AfterFork_Child",
                )?),
                set_string: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *const c_char),
                >(sym(c"PyErr_SetString")?),
                import_error: sym(c"PyExc_ImportError")?.cast(),
                sys_get: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*const c_char) -> *mut c_void,
                >(sym(c"PySys_GetObject")?),
                decode: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*const c_char) -> *mut c_void,
                >(sym(c"PyUnicode_DecodeFSDefault")?),
                list_append: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
                >(sym(c"PyList_Append")?),
                dec_ref: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void)>(
                    sym(c"Py_DecRef")?,
                ),
            })
        }
    }

    /// Appends the program's arguments to `sys.argv` and `sys.orig_argv`.
    pub(super) unsafe fn append_args(&self, args: &[String]) {
        for list in [c"argv", c"orig_argv"] {
            let list = (self.sys_get)(list.as_ptr());
            if list.is_null() {
                continue;
            }
            for a in args {
                let Ok(c) = CString::new(a.as_bytes()) else {
                    continue;
                };
                let s = (self.decode)(c.as_ptr());
                if !s.is_null() {
                    (self.list_append)(list, s);
                    (self.dec_ref)(s);
                }
            }
        }
    }
}
