//! The user database, through the C library (NSS: files, LDAP, sssd...):
//! a name to its ids (`--user`), a uid to its name (the detail pane).
//! rustix does no NSS by design, and nix's `User` is these same calls
//! behind a second system crate beside rustix: the two `unsafe` calls stay
//! here, with what they need.

use std::ffi::{CStr, CString};
use std::io;

/// A user from the password database.
#[derive(Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// The buffer `getpw*_r` fills, grown while it says ERANGE (up to 1 MiB).
fn with_buffer<T>(
    mut call: impl FnMut(&mut [u8]) -> Result<Option<T>, i32>,
) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match call(&mut buf) {
            Err(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            Err(rc) => return Err(io::Error::from_raw_os_error(rc)),
            Ok(found) => return Ok(found),
        }
    }
}

fn empty_passwd() -> libc::passwd {
    libc::passwd {
        pw_name: std::ptr::null_mut(),
        pw_passwd: std::ptr::null_mut(),
        pw_uid: 0,
        pw_gid: 0,
        pw_gecos: std::ptr::null_mut(),
        pw_dir: std::ptr::null_mut(),
        pw_shell: std::ptr::null_mut(),
    }
}

/// The account named `name`, if there is one.
pub fn by_name(name: &str) -> io::Result<Option<Account>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    with_buffer(|buf| {
        let mut pwd = empty_passwd();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: a valid C string, output struct and buffer of the given
        // length; only the ids are read, while `buf` lives.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => Ok(None),
            0 => Ok(Some(Account {
                name: name.to_string(),
                uid: pwd.pw_uid,
                gid: pwd.pw_gid,
            })),
            rc => Err(rc),
        }
    })
}

/// The name of user `uid`, if it has one (untrusted text: whoever edits
/// the database chooses it).
pub fn name_of(uid: u32) -> Option<String> {
    with_buffer(|buf| {
        let mut pwd = empty_passwd();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: an output struct and buffer of the given length; the name
        // points into `buf` and is copied out before `buf` is reused.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() || pwd.pw_name.is_null() => Ok(None),
            // SAFETY: the C library wrote a NUL-terminated name into `buf`.
            0 => Ok(Some(
                unsafe { CStr::from_ptr(pwd.pw_name) }
                    .to_string_lossy()
                    .into_owned(),
            )),
            rc => Err(rc),
        }
    })
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_both_ways() {
        let root = by_name("root").unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(name_of(0).as_deref(), Some("root"));
        assert_eq!(by_name("no-such-user-tcptop").unwrap(), None);
        assert_eq!(by_name("nul\0byte").unwrap(), None);
        assert_eq!(name_of(4_000_000_000), None);
    }
}
