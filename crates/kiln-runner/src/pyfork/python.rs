//! The few CPython C API functions the server calls, found in the running interpreter (which
//! exports them for extension modules): no Python headers or libpython needed to build Kiln.

use std::ffi::{c_char, c_void, CStr};

/// The CPython functions the server calls, found in the running interpreter.
pub(super) struct Python {
    pub(super) before_fork: unsafe extern "C" fn(),
    pub(super) after_fork_parent: unsafe extern "C" fn(),
    pub(super) after_fork_child: unsafe extern "C" fn(),
    set_string: unsafe extern "C" fn(*mut c_void, *const c_char),
    import_error: *mut *mut c_void,
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
        type Void = unsafe extern "C" fn();
        unsafe {
            Ok(Python {
                before_fork: std::mem::transmute::<*mut c_void, Void>(sym(c"PyOS_BeforeFork")?),
                after_fork_parent: std::mem::transmute::<*mut c_void, Void>(sym(
                    c"PyOS_AfterFork_Parent",
                )?),
                after_fork_child: std::mem::transmute::<*mut c_void, Void>(sym(
                    c"PyOS_AfterFork_Child",
                )?),
                set_string: std::mem::transmute::<
                    *mut c_void,
                    unsafe extern "C" fn(*mut c_void, *const c_char),
                >(sym(c"PyErr_SetString")?),
                import_error: sym(c"PyExc_ImportError")?.cast(),
            })
        }
    }

    /// Sets ImportError(`message`) as the pending exception.
    ///
    /// # Safety
    /// With the GIL held.
    pub(super) unsafe fn raise_import_error(&self, message: &CStr) {
        (self.set_string)(*self.import_error, message.as_ptr());
    }
}
