//! The bpf() commands that Aya 0.16 has no public wrapper for: reading a
//! hash map in batches, lookup-and-delete on a hash map, and linking and
//! running an iterator whose target is a map (see `iter.rs`).
//!
//! `union bpf_attr`, the command numbers and the attach type come from
//! aya-obj's bindings, generated from the kernel's uapi headers: nothing
//! here copies a kernel layout or number by hand. Every pointer the kernel
//! follows is set in this file, from a typed Aya map (whose key and value
//! sizes Aya checked against `K` and `V`) or a live local buffer, so the
//! functions are safe to call.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::Pod;
use aya::maps::{HashMap, IterableMap, MapData};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_attr__bindgen_ty_3 as BatchAttr, bpf_cmd};

/// What `bpf()` may be given: the whole union, or a member of it (all
/// start at offset 0) when the kernel should see only that member's bytes.
trait Attr {}
impl Attr for bpf_attr {}
/// `attr.batch`, the batch commands' member: read back whole after the call
/// (the kernel writes `count` into it).
impl Attr for BatchAttr {}
/// Fails to build if `BatchAttr` stops being the union's `batch` member.
const _: fn(BatchAttr) -> bpf_attr = |batch| bpf_attr { batch };

/// A `union bpf_attr` with every byte zero: the kernel refuses an
/// attribute with anything but zeros past the fields a command reads, and
/// past the end of its own (older, smaller) union.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: the union's members are integers, arrays of integers and
    // unions of those, for which all-zero bytes are a valid value. No crate
    // zero-initialises this bindgen type (Aya does the same internally).
    unsafe { std::mem::zeroed() }
}

/// bpf(cmd, attr, size of attr); the kernel's return value.
fn sys_bpf<A: Attr>(cmd: bpf_cmd, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `union bpf_attr` or one of its
    // members (trait `Attr`), of the size passed: the kernel reads that many
    // bytes and writes back only within them. The pointers in it are set by
    // the functions below to live buffers of the sizes the command writes.
    // Aya keeps its bpf() wrappers private, and neither rustix nor libc has
    // one: a raw system call is the only way.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr),
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A bpf() command that returns a new file descriptor.
fn sys_bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let fd = sys_bpf(cmd, attr)?;
    let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The map's own descriptor, as the kernel wants it in an attribute.
fn map_fd<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> u32 {
    map.map().fd().as_fd().as_raw_fd() as u32
}

/// One `BPF_MAP_LOOKUP_BATCH` call (Linux 5.6+): up to
/// `min(keys.len(), values.len())` records of `map` from the bucket
/// `cursor` on (`None`: the start), the bucket to go on from into `next`.
/// Returns how many records were copied, with the call's error (ENOENT at
/// the end of the map, with the last records).
pub(super) fn lookup_batch<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    cursor: Option<&u32>,
    next: &mut u32,
    keys: &mut [K],
    values: &mut [V],
) -> (usize, io::Result<()>) {
    let room = keys.len().min(values.len());
    let mut attr = BatchAttr {
        in_batch: cursor.map_or(0, |c| std::ptr::from_ref(c) as u64),
        out_batch: std::ptr::from_mut(next) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: u32::try_from(room).unwrap_or(u32::MAX),
        map_fd: map_fd(map),
        elem_flags: 0,
        flags: 0,
    };
    let result = sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr).map(drop);
    ((attr.count as usize).min(room), result)
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map (Linux 5.14+): the value
/// the delete removed, `Ok(None)` if `key` was not there.
pub(super) fn lookup_and_delete<K: Pod, V: Pod + Default>(
    map: &HashMap<MapData, K, V>,
    key: &K,
) -> io::Result<Option<V>> {
    let mut value = V::default();
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map_fd(map);
    attr.__bindgen_anon_2.key = std::ptr::from_ref(key) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = std::ptr::from_mut(&mut value) as u64;
    match sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_LINK_CREATE` for the iterator program `prog` (`BPF_TRACE_ITER`),
/// of a map element iterator over `map` if given.
pub(super) fn link_iterator(
    prog: BorrowedFd<'_>,
    map: Option<BorrowedFd<'_>>,
) -> io::Result<OwnedFd> {
    // `union bpf_iter_link_info`'s `map` member is one __u32, the map's fd;
    // the kernel reads iter_info_len bytes of it.
    let info: Option<u32> = map.map(|m| m.as_raw_fd() as u32);
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.attach_type = bpf_attach_type::BPF_TRACE_ITER as u32;
    if let Some(info) = &info {
        attr.link_create.__bindgen_anon_3.__bindgen_anon_1.iter_info =
            std::ptr::from_ref(info) as u64;
        attr.link_create
            .__bindgen_anon_3
            .__bindgen_anon_1
            .iter_info_len = std::mem::size_of::<u32>() as u32;
    }
    sys_bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// `BPF_ITER_CREATE`: a new iterator (read it to run the program) from the
/// iterator link `link`.
pub(super) fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.iter_create.link_fd = link.as_raw_fd() as u32;
    sys_bpf_fd(bpf_cmd::BPF_ITER_CREATE, &mut attr)
}
